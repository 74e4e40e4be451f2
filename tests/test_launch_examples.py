"""launch/README.md's examples run (dry), and the launchers refuse bad input
in a dry run with one line naming the flag."""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/real_vs_random/configs/tiny.py'


def _run(args, timeout=120, **kwargs):
  return subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, **kwargs)


def _py(script, *args):
  return _run([sys.executable, os.path.join('launch', script), *args])


def readme_commands():
  """The launcher commands of launch/README.md's sh blocks, as argv lists."""
  with open(os.path.join(REPO, 'launch', 'README.md')) as f:
    text = f.read()
  commands = []
  for block in re.findall(r'```sh\n(.*?)```', text, re.S):
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      line = line.split(' #')[0].strip()
      if line.startswith(('python launch/', 'launch/local.sh')):
        commands.append(shlex.split(line))
  return commands


def _as_dry_run(argv):
  """`argv` with --dry_run added (right after the script) and the repo's
  Python for `python`."""
  if argv[0] == 'python':
    argv = [sys.executable] + argv[1:]
    script_at = 1
  else:
    argv = ['bash'] + argv
    script_at = 1
  if '--dry_run' not in argv:
    argv = argv[:script_at + 1] + ['--dry_run'] + argv[script_at + 1:]
  return argv


def test_readme_has_an_example_of_every_launcher():
  scripts = {argv[1] if argv[0] == 'python' else argv[0]
             for argv in readme_commands()}
  assert scripts == {'launch/local.sh', 'launch/multiprocess.py',
                     'launch/slurm.py', 'launch/tpu_vm.py'}


@pytest.mark.parametrize('argv', readme_commands(),
                         ids=lambda a: ' '.join(a)[:60])
def test_readme_example_dry_runs(argv):
  out = _run(_as_dry_run(argv))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip()


def test_tpu_vm_sweep_runs_each_config_under_its_experiment_in_its_workdir():
  out = _py('tpu_vm.py', '--name=rvr', '--zone=z', '--steps=run',
            '--dry_run', '--workdir=/mnt/shared/sweep',
            '--configs=experiments/real_vs_random/configs/default.py,'
            'experiments/noisy_labels/configs/default.py',
            '--', '--config.seed=1')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 2
  for line, name in zip(lines, ('real_vs_random', 'noisy_labels')):
    assert (f'python3 -m experiments.{name}.main --config=experiments/{name}/'
            f'configs/default.py --workdir=/mnt/shared/sweep/{name}/default '
            '--distributed=auto --config.seed=1') in line


def test_local_sh_dry_run_anywhere_and_mesh_flag_after_the_config():
  out = _run(['bash', 'launch/local.sh', 'real_vs_random', '/tmp/w',
              f'--config={TINY}', '--dry_run'])
  assert out.returncode == 0, out.stderr
  assert out.stdout.split()[1:] == [
      '-m', 'experiments.real_vs_random.main', '--workdir=/tmp/w',
      f'--config={TINY}', '--config.mesh.data=-1']
  own = _run(['bash', 'launch/local.sh', '--dry_run', 'real_vs_random',
              '/tmp/w', f'--config={TINY}', '--config.mesh.data=1'])
  assert own.stdout.split()[-1] == '--config.mesh.data=1'
  assert '--config.mesh.data=-1' not in own.stdout


def test_local_sh_runs_a_tiny_config(tmp_path):
  """local.sh's own example for real (its --config before the mesh flag):
  one epoch of the tiny config, real labels only."""
  out = _run(['bash', 'launch/local.sh', 'real_vs_random', str(tmp_path),
              f'--config={TINY}', '--config.train.epochs=1',
              "--config.label_modes=('real',)"],
             env=dict(os.environ, PYTHON=sys.executable), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.exists(tmp_path / 'real' / 'metrics.jsonl')
  assert os.path.exists(tmp_path / 'summary.json')


BAD_DRY_RUNS = [
    (['bash', 'launch/local.sh', '--dry_run', 'nope', '/tmp/w'],
     'no experiments/nope/main.py'),
    (['bash', 'launch/local.sh', '--dry_run', 'real_vs_random', '/tmp/w',
      '--config=experiments/real_vs_random/configs/nope.py'], 'no such file'),
    ([sys.executable, 'launch/multiprocess.py', '--dry_run', '--workdir=/w',
      '--experiment=nope'], 'no experiments/nope/main.py'),
    ([sys.executable, 'launch/multiprocess.py', '--dry_run', '--workdir=/w',
      '--port=99999'], 'port'),
    ([sys.executable, 'launch/multiprocess.py', '--dry_run', '--workdir=/w',
      '--', '--config=nope.py'], 'no such file'),
    ([sys.executable, 'launch/slurm.py', '--dry_run', '--workdir=/w',
      '--port=99999'], 'port'),
    ([sys.executable, 'launch/slurm.py', '--dry_run', '--workdir=/w',
      '--time=abc'], '--time'),
    ([sys.executable, 'launch/slurm.py', '--dry_run', '--workdir=/w',
      '--experiment=nope'], 'no experiments/nope/main.py'),
    ([sys.executable, 'launch/slurm.py', '--dry_run', '--workdir=/w', '--',
      '--config=nope.py'], 'no such file'),
    ([sys.executable, 'launch/tpu_vm.py', '--dry_run', '--name=n', '--zone=z',
      '--accelerator_type=v4-7'], 'v4-7'),
    ([sys.executable, 'launch/tpu_vm.py', '--dry_run', '--name=n', '--zone=z',
      '--steps='], '--steps'),
    ([sys.executable, 'launch/tpu_vm.py', '--dry_run', '--name=n', '--zone=z',
      '--steps=run', '--configs=nope.py'], 'no such file'),
    ([sys.executable, 'launch/tpu_vm.py', '--dry_run', '--name=n', '--zone=z',
      '--steps=run', '--experiment=nope', '--configs=setup.cfg'],
     'no experiments/nope/main.py'),
]


@pytest.mark.parametrize('argv,match', BAD_DRY_RUNS,
                         ids=lambda a: ' '.join(a)[-40:]
                         if isinstance(a, list) else a)
def test_bad_dry_runs_fail_naming_the_cause(argv, match):
  out = _run(argv)
  assert out.returncode != 0
  assert match in out.stderr, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert not out.stdout.strip()  # no command printed


def test_slurm_quotes_a_workdir_with_a_space(tmp_path):
  workdir = tmp_path / 'my runs'
  out = _py('slurm.py', '--dry_run', f'--workdir={workdir}', '--',
            f'--config={TINY}')
  assert out.returncode == 0, out.stderr
  assert f'#SBATCH --output="{workdir}/slurm-%j.out"' in out.stdout
  assert shlex.quote(f'--workdir={workdir}') in out.stdout


def test_tpu_types():
  sys.path.insert(0, os.path.join(REPO, 'launch'))
  try:
    import checks  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  for good in ('v4-8', 'v4-32', 'v5p-128', 'v5litepod-4', 'v6e-1', 'v6e-16',
               'v7x-2'):
    checks.tpu_accelerator_type(good)
  for bad in ('v4-7', 'v4-0', 'v3-4', 'v5litepod-3', 'tpu', 'v4', 'v4-8x'):
    with pytest.raises(ValueError, match='--accelerator_type'):
      checks.tpu_accelerator_type(bad)
