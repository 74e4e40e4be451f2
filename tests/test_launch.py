"""The launchers: the commands they print (no cloud call, no sbatch), and the
multi-process launcher run for real (2 processes × 4 CPU devices, gloo)."""

import os
import re
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.common import distributed
from experiments.common import files
from experiments.real_vs_random import train
from experiments.real_vs_random.configs import tiny
from tests.test_data_parallel import assert_same_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/real_vs_random/configs/tiny.py'


def _run(args, timeout=120, **kwargs):
  return subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, **kwargs)


def _py(script, *args, timeout=120):
  return _run([sys.executable, os.path.join('launch', script), *args],
              timeout=timeout)


def test_local_dry_run_prints_the_command():
  out = _run(['bash', 'launch/local.sh', '--dry_run', 'real_vs_random',
              '/tmp/w', f'--config={TINY}'])
  assert out.returncode == 0, out.stderr
  words = out.stdout.split()
  assert words[1:] == ['-m', 'experiments.real_vs_random.main',
                       '--workdir=/tmp/w', f'--config={TINY}',
                       '--config.mesh.data=-1']
  bad = _run(['bash', 'launch/local.sh', '--dry_run', 'nope', '/tmp/w'])
  assert bad.returncode == 2 and 'real_vs_random' in bad.stderr


def test_multiprocess_dry_run_prints_one_command_per_process():
  out = _py('multiprocess.py', '--dry_run', '--workdir=/tmp/w',
            '--num_processes=3', '--devices_per_process=2', '--port=4321',
            '--', f'--config={TINY}')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert line.startswith('JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2 '
                           'JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo ')
    assert line.endswith(
        f'-m experiments.real_vs_random.main --workdir=/tmp/w --config={TINY}'
        f' --coordinator_address=127.0.0.1:4321 --num_processes=3'
        f' --process_id={i}')


def _slurm_script(tmp_path, *flags):
  out = _py('slurm.py', '--dry_run', f'--workdir={tmp_path}/w', *flags,
            '--', f'--config={TINY}', "--config.label_modes=('real',)")
  assert out.returncode == 0, out.stderr
  assert not os.path.exists(f'{tmp_path}/w/launch.sbatch')  # nothing written
  lines = out.stdout.splitlines()
  assert lines[0] == f'# {tmp_path}/w/launch.sbatch'
  assert lines[-1] == f'# then: sbatch {tmp_path}/w/launch.sbatch'
  return '\n'.join(lines[1:-1]) + '\n'


def _stub(directory, name, body):
  path = os.path.join(directory, name)
  with open(path, 'w') as f:
    f.write('#!/bin/bash\n' + body + '\n')
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


@pytest.mark.parametrize('tasks,per_node', [('gpu', 8), ('node', 1)])
def test_slurm_script_passes_each_task_its_coordinator_and_id(tmp_path, tasks,
                                                              per_node):
  text = _slurm_script(tmp_path, '--nodes=2', '--gpus_per_node=8',
                       f'--tasks={tasks}', '--port=2222', '--partition=p',
                       '--python=echo')
  for line in ('#SBATCH --nodes=2', f'#SBATCH --ntasks-per-node={per_node}',
               '#SBATCH --gpus-per-node=8', '#SBATCH --partition=p'):
    assert line in text.splitlines()
  assert ('CUDA_VISIBLE_DEVICES' in text) == (tasks == 'gpu')
  # Run the script with stub scontrol/srun: srun runs the task as process 3
  # of 16 on local GPU 3; `--python=echo` prints the experiment's argv.
  bin_dir = str(tmp_path / 'bin')
  os.makedirs(bin_dir)
  _stub(bin_dir, 'scontrol', 'printf "node-a\\nnode-b\\n"')
  _stub(bin_dir, 'srun', 'shift; SLURM_PROCID=3 SLURM_NTASKS=16 '
        'SLURM_LOCALID=3 "$@"')
  script = tmp_path / 'job.sbatch'
  script.write_text(text)
  task = text.split("<<'TASK'\n")[1].split('TASK\n')[0]
  out = _run(['bash', str(script)], env=dict(
      os.environ, PATH=bin_dir + os.pathsep + os.environ['PATH'],
      SLURM_JOB_NODELIST='node-[a-b]'))
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[0] == (
      f"-m experiments.real_vs_random.main --workdir={tmp_path}/w "
      f"--config={TINY} --config.label_modes=('real',) "
      '--coordinator_address=node-a:2222 --num_processes=16 --process_id=3')
  assert ('export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"' in task) == (
      tasks == 'gpu')


def test_tpu_vm_dry_run_prints_create_copy_install_sweep_and_delete():
  common = ['--name=rvr', '--zone=us-central2-b', '--project=proj',
            '--dry_run']
  out = _py('tpu_vm.py', *common, '--accelerator_type=v4-32',
            '--workdir=/mnt/shared/rvr',
            f'--configs=experiments/real_vs_random/configs/default.py,{TINY}',
            '--', '--config.seed=1')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  gcloud = 'gcloud compute tpus tpu-vm'
  where = '--zone=us-central2-b --project=proj'
  assert lines[0] == (f'{gcloud} create rvr {where} --accelerator-type=v4-32 '
                      '--version=tpu-ubuntu2204-base')
  assert lines[1].startswith('tar -czf /tmp/coherence_jax_src.tgz')
  assert lines[2] == (f'{gcloud} scp /tmp/coherence_jax_src.tgz '
                      f'rvr:coherence_jax_src.tgz {where} --worker=all')
  assert lines[3].startswith(f'{gcloud} ssh rvr {where} --worker=all ')
  assert "pip install -e '\"'\"'.[experiments]'\"'\"'" in lines[4]
  for line, stem in zip(lines[5:], ('default', 'tiny')):
    assert line.startswith(f'{gcloud} ssh rvr {where} --worker=all ')
    assert (f'python3 -m experiments.real_vs_random.main --config='
            f'experiments/real_vs_random/configs/{stem}.py --workdir='
            f'/mnt/shared/rvr/{stem} --distributed=auto --config.seed=1'
            in line)
  assert len(lines) == 7
  down = _py('tpu_vm.py', *common, '--steps=delete')
  assert down.stdout.strip() == f'{gcloud} delete rvr {where} --quiet'
  bad = _py('tpu_vm.py', *common, '--steps=create,explode')
  assert bad.returncode != 0 and 'explode' in bad.stderr


def test_distributed_flags_must_come_together():
  with pytest.raises(ValueError, match='--coordinator_address'):
    distributed.initialize('off', None, 2, None)
  with pytest.raises(ValueError, match='--process_id'):
    distributed.initialize('off', '127.0.0.1:1', 2, 2)


def _launch(workdir, *extra, timeout=300, launcher_timeout=240):
  return _py('multiprocess.py', f'--workdir={workdir}', '--num_processes=2',
             '--devices_per_process=4', f'--timeout={launcher_timeout}', '--',
             *extra, timeout=timeout)


def _log_rows(path):
  """The per-epoch log lines of a process, without the time in them."""
  with open(path) as f:
    return [re.sub(r'\(\d+s\)', '', line) for line in f
            if line.startswith(('[real]', '[random]'))]


@pytest.mark.slow  # ~45 s; the 2-process coherence test in test_sharding.py runs by default
def test_two_processes_of_four_devices_equal_one_process(tmp_path):
  """launch/multiprocess.py on the tiny config (real labels): 24 steps on 8
  devices of 2 processes = the same config in this process on 1 device."""
  modes = "--config.label_modes=('real',)"
  out = _launch(tmp_path / 'mp', f'--config={TINY}', modes)
  assert out.returncode == 0, out.stdout + out.stderr
  config = tiny.get_config()
  config.label_modes = ('real',)
  config.mesh.data = 1
  train.train_and_evaluate(config, str(tmp_path / 'one'))
  want = files.read_rows(str(tmp_path / 'one' / 'real' / 'metrics.jsonl'))
  got = files.read_rows(str(tmp_path / 'mp' / 'real' / 'metrics.jsonl'))
  assert len(want) == 12  # dense_until=8, growth=1.5, 24 steps
  assert_same_rows(got, want)
  logs = tmp_path / 'mp' / 'logs'
  first = _log_rows(logs / 'process_0.log')
  assert first and first == _log_rows(logs / 'process_1.log')
  for name in ('summary.json', 'table.md', 'real_vs_random.png'):
    assert (tmp_path / 'mp' / name).exists()


def _gone(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


def test_launcher_fails_and_kills_its_processes_on_timeout(tmp_path):
  start = time.time()
  out = _launch(tmp_path / 'mp', f'--config={TINY}', launcher_timeout=3,
                timeout=60)
  assert out.returncode == 124
  assert 'timeout' in out.stderr
  pids = [int(p) for p in re.findall(r'pid (\d+)', out.stdout)]
  assert len(pids) == 2 and all(_gone(p) for p in pids)
  assert time.time() - start < 50


@pytest.mark.slow  # the timeout test covers killing and the exit code
def test_launcher_returns_non_zero_when_a_process_fails(tmp_path):
  out = _launch(tmp_path / 'mp', f'--config={TINY}', '--config.mesh.data=3',
                timeout=120)
  assert out.returncode != 0
  assert 'failed' in out.stderr
  with open(tmp_path / 'mp' / 'logs' / 'process_0.log') as f:
    assert 'mesh.data' in f.read()


@pytest.mark.long  # ~10 min on 2 cores
def test_noisy_labels_per_example_aggregators_on_two_processes(tmp_path):
  """winsorized:4 over the global batch of 2 processes × 4 devices (B=100,
  padded to 104) = one process on one device. Slow: the per-coordinate order
  statistics gather the batch over gloo (~10 min on 2 loaded cores)."""
  noisy = 'experiments/noisy_labels/configs/tiny.py'
  extra = [f'--config={noisy}', "--config.aggregators=('mean','winsorized:4')",
           '--config.train.epochs=1']
  out = _py('multiprocess.py', '--experiment=noisy_labels',
            f'--workdir={tmp_path}/mp', '--timeout=1500', '--', *extra,
            timeout=1600)
  assert out.returncode == 0, out.stdout + out.stderr
  one = _run([sys.executable, '-m', 'experiments.noisy_labels.main',
              f'--workdir={tmp_path}/one', *extra, '--config.mesh.data=1'],
             timeout=600, env=dict(os.environ, JAX_NUM_CPU_DEVICES='1'))
  assert one.returncode == 0, one.stderr
  for run in ('mean', 'winsorized_c4'):
    want = files.read_rows(str(tmp_path / 'one' / run / 'metrics.jsonl'))
    got = files.read_rows(str(tmp_path / 'mp' / run / 'metrics.jsonl'))
    assert [r['step'] for r in got] == [r['step'] for r in want] == [0, 40]
    for g, w in zip(got, want):
      for key in ('pristine_m_coherence', 'corrupt_m_coherence'):
        np.testing.assert_allclose(g[key], w[key], rtol=1e-4)
      for key in ('pristine_accuracy', 'corrupt_accuracy', 'test_accuracy'):
        np.testing.assert_allclose(g[key], w[key], atol=1e-3)
