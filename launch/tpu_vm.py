r"""Cloud TPU VM: create a slice, copy and install the package, run configs, delete.

  python launch/tpu_vm.py --name=rvr --zone=us-central2-b \
      --accelerator_type=v4-32 --workdir=/mnt/shared/rvr --dry_run \
      --configs=experiments/real_vs_random/configs/default.py -- \
      --config.train.epochs=60

Steps (--steps, in this order; default create,copy,install,run):
  create   gcloud compute tpus tpu-vm create NAME --zone --accelerator-type
           --version [--project] [--spot]
  copy     tar the repository (no .venv/.git/results) and `tpu-vm scp` it to
           every worker, then unpack it in ~/coherence_jax
  install  `tpu-vm ssh --worker=all`: pip install 'jax[tpu]' and
           `pip install -e '.[experiments]'`
  run      `tpu-vm ssh --worker=all`: python -m experiments.<name>.main
           --distributed=auto (jax.distributed.initialize() reads the slice's
           hosts from the TPU metadata) for each config of --configs, in
           order (a sweep), each under its own experiment's main (a config
           in experiments/<name>/configs/ runs experiments.<name>.main) and
           in <workdir>/<config file stem> (<workdir>/<experiment>/<stem>
           when the sweep spans several experiments); flags after `--` go
           to every run
  delete   gcloud compute tpus tpu-vm delete NAME --quiet (teardown; run it
           alone: --steps=delete)

The workdir should be a file system every worker mounts (Filestore/NFS or a
gcsfuse bucket): process 0 writes the reports, orbax checkpoints are written
by all workers together, and a preempted run resumes from them.
--dry_run prints every command, one per line, and runs nothing.
"""

import os
import shlex
import subprocess
import sys
from typing import List, Sequence

from absl import app
from absl import flags

import checks  # launch/checks.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ('create', 'copy', 'install', 'run', 'delete')

_NAME = flags.DEFINE_string('name', None, 'TPU VM name.', required=True)
_ZONE = flags.DEFINE_string('zone', None, 'e.g. us-central2-b.',
                            required=True)
_PROJECT = flags.DEFINE_string('project', None, 'GCP project (default: '
                               "gcloud's).")
_ACCELERATOR = flags.DEFINE_string('accelerator_type', 'v4-32',
                                   'e.g. v4-8 (one host), v4-32 (4 hosts).')
_VERSION = flags.DEFINE_string('version', 'tpu-ubuntu2204-base',
                               'TPU VM software version.')
_SPOT = flags.DEFINE_bool('spot', False, 'Create a Spot TPU.')
_EXPERIMENT = flags.DEFINE_string(
    'experiment', 'real_vs_random', 'Folder under experiments/ (its main.py) '
    'for configs outside experiments/<name>/configs/; a config inside one '
    "runs under that experiment's main.")
_CONFIGS = flags.DEFINE_list(
    'configs', ['experiments/real_vs_random/configs/default.py'],
    'Config files (relative to the repository) run one after another.')
_WORKDIR = flags.DEFINE_string('workdir', '/mnt/shared/coherence_jax',
                               'Workdir on the workers (shared mount).')
_REMOTE_DIR = flags.DEFINE_string('remote_dir', 'coherence_jax',
                                  'Checkout directory under ~ on the workers.')
_STEPS = flags.DEFINE_list('steps', ['create', 'copy', 'install', 'run'],
                           f'Any of {STEPS}, run in that order.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the commands, run nothing.')

TARBALL = '/tmp/coherence_jax_src.tgz'


def _gcloud(verb: str, name: str, zone: str, project: str) -> List[str]:
  cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, name, f'--zone={zone}']
  return cmd + ([f'--project={project}'] if project else [])


def _ssh_all(name, zone, project, command: str) -> List[str]:
  return _gcloud('ssh', name, zone, project) + ['--worker=all',
                                                f'--command={command}']


def experiment_of(config: str, default: str) -> str:
  """The experiment whose main runs `config`: <name> for a file under
  experiments/<name>/configs/, else `default`.

  >>> experiment_of('experiments/noisy_labels/configs/tiny.py', 'x')
  'noisy_labels'
  """
  parts = os.path.normpath(config).split(os.sep)
  if len(parts) >= 4 and parts[-4] == 'experiments' and parts[-2] == 'configs':
    return parts[-3]
  return default


def run_dirs(workdir: str, experiments: Sequence[str],
             configs: Sequence[str]) -> List[str]:
  """Each config's workdir: <workdir>/<stem>, or <workdir>/<experiment>/<stem>
  when the sweep spans several experiments (their default.py would collide).

  >>> run_dirs('/w', ['a', 'b'], ['x/default.py', 'y/default.py'])
  ['/w/a/default', '/w/b/default']
  """
  stems = [os.path.splitext(os.path.basename(c))[0] for c in configs]
  several = len(set(experiments)) > 1
  dirs = [os.path.join(workdir, e, s) if several else os.path.join(workdir, s)
          for e, s in zip(experiments, stems)]
  repeated = sorted({d for d in dirs if dirs.count(d) > 1})
  if repeated:
    raise ValueError(f'--configs: two configs would share the workdir(s) '
                     f'{repeated} (same file name); rename one or run them '
                     'with separate --workdir.')
  return dirs


def check(*, accelerator_type: str, experiment: str, configs: Sequence[str],
          steps: Sequence[str], extra: Sequence[str]) -> None:
  """ValueError naming the first bad flag (nothing printed or run)."""
  unknown = [s for s in steps if s not in STEPS]
  if unknown or not steps:
    raise ValueError(f'--steps: got {list(steps)}; pass one or more of '
                     f'{STEPS}, comma-separated.')
  if 'create' in steps:
    checks.tpu_accelerator_type(accelerator_type)
  if 'run' in steps:
    if not configs:
      raise ValueError('--configs: empty; pass the config files to run.')
    for config in configs:
      checks.experiment(experiment_of(config, experiment))
      checks.config_files([f'--config={config}'])
    checks.config_files(extra)


def plan(*, name: str, zone: str, project: str, accelerator_type: str,
         version: str, spot: bool, experiment: str, configs: Sequence[str],
         workdir: str, remote_dir: str, steps: Sequence[str],
         extra: Sequence[str]) -> List[List[str]]:
  """The commands (argv lists) of the chosen steps, in order."""
  check(accelerator_type=accelerator_type, experiment=experiment,
        configs=configs, steps=steps, extra=extra)
  cmds = []
  if 'create' in steps:
    cmds.append(_gcloud('create', name, zone, project) + [
        f'--accelerator-type={accelerator_type}', f'--version={version}'] + (
            ['--spot'] if spot else []))
  if 'copy' in steps:
    cmds.append(['tar', '-czf', TARBALL, '--exclude=.venv', '--exclude=.git',
                 '--exclude=results', '--exclude=*.egg-info',
                 '--exclude=__pycache__', '-C', REPO, '.'])
    scp = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', TARBALL,
           f'{name}:{os.path.basename(TARBALL)}', f'--zone={zone}']
    cmds.append(scp + ([f'--project={project}'] if project else [])
                + ['--worker=all'])
    cmds.append(_ssh_all(name, zone, project,
                         f'mkdir -p ~/{remote_dir} && tar -xzf '
                         f'~/{os.path.basename(TARBALL)} -C ~/{remote_dir}'))
  if 'install' in steps:
    cmds.append(_ssh_all(
        name, zone, project,
        f"cd ~/{remote_dir} && python3 -m pip install -U 'jax[tpu]' && "
        "python3 -m pip install -e '.[experiments]'"))
  if 'run' in steps:
    names = [experiment_of(c, experiment) for c in configs]
    for config, name_, run_dir in zip(configs, names,
                                      run_dirs(workdir, names, configs)):
      args = ['python3', '-m', f'experiments.{name_}.main',
              f'--config={config}', f'--workdir={run_dir}',
              '--distributed=auto', *extra]
      cmds.append(_ssh_all(name, zone, project, f'cd ~/{remote_dir} && '
                           + ' '.join(shlex.quote(a) for a in args)))
  if 'delete' in steps:
    cmds.append(_gcloud('delete', name, zone, project) + ['--quiet'])
  return cmds


def main(argv):
  try:
    cmds = plan(name=_NAME.value, zone=_ZONE.value, project=_PROJECT.value,
                accelerator_type=_ACCELERATOR.value, version=_VERSION.value,
                spot=_SPOT.value, experiment=_EXPERIMENT.value,
                configs=_CONFIGS.value, workdir=_WORKDIR.value,
                remote_dir=_REMOTE_DIR.value, steps=_STEPS.value,
                extra=argv[1:])
  except ValueError as e:
    raise app.UsageError(str(e))
  for cmd in cmds:
    print(' '.join(shlex.quote(a) for a in cmd), flush=True)
    if not _DRY_RUN.value:
      code = subprocess.call(cmd)
      if code:
        print(f'failed (exit {code}): {cmd[0]} ... ; stopping.',
              file=sys.stderr)
        sys.exit(code)
  return 0


if __name__ == '__main__':
  app.run(main)
