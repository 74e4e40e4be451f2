r"""An sbatch script for an experiment on SLURM GPU nodes; submits it or prints it.

  python launch/slurm.py --experiment=real_vs_random --nodes=2 \
      --gpus_per_node=8 --workdir=/shared/rvr --dry_run -- \
      --config=experiments/real_vs_random/configs/default.py

One task per GPU (--tasks=gpu, default: each process sees one GPU through
CUDA_VISIBLE_DEVICES=$SLURM_LOCALID) or one task per node (--tasks=node: each
process drives all GPUs of its node). The script starts the tasks with
`srun`; every task computes the coordinator (the first host of
$SLURM_JOB_NODELIST, port --port), num_processes ($SLURM_NTASKS) and
process_id ($SLURM_PROCID) and passes them as flags to
`python -m experiments.<name>.main`. The workdir must be on a file system
every node sees (process 0 writes the reports; orbax checkpoints are written
by all processes together).

--dry_run prints the script and the sbatch command; otherwise the script is
written to --script (default <workdir>/launch.sbatch) and submitted.
"""

import os
import re
import shlex
import subprocess
import sys
from typing import Sequence

from absl import app
from absl import flags

import checks  # launch/checks.py

_EXPERIMENT = flags.DEFINE_string('experiment', 'real_vs_random',
                                  'Folder under experiments/ (its main.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Experiment workdir (shared '
                               'file system).', required=True)
_NODES = flags.DEFINE_integer('nodes', 2, 'Nodes.', lower_bound=1)
_GPUS = flags.DEFINE_integer('gpus_per_node', 8, 'GPUs per node.',
                             lower_bound=1)
_TASKS = flags.DEFINE_enum('tasks', 'gpu', ['gpu', 'node'],
                           'One process per GPU or per node.')
_PORT = flags.DEFINE_integer('port', 12355, 'Coordinator port on the first '
                             'node.', lower_bound=1, upper_bound=65535)
_TIME = flags.DEFINE_string('time', '04:00:00', 'sbatch --time.')
_PARTITION = flags.DEFINE_string('partition', None, 'sbatch --partition.')
_ACCOUNT = flags.DEFINE_string('account', None, 'sbatch --account.')
_JOB_NAME = flags.DEFINE_string('job_name', None, 'Default: the experiment.')
_REPO = flags.DEFINE_string(
    'repo', os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'Repository checkout on the shared file system.')
_PYTHON = flags.DEFINE_string('python', 'python', 'Interpreter on the nodes '
                              '(with `pip install -e .[experiments]` and '
                              'jax[cuda12]).')
_SCRIPT = flags.DEFINE_string('script', None, 'Where to write the script; '
                              'default <workdir>/launch.sbatch.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the script and the sbatch command only.')


def _sbatch_quote(value: str) -> str:
  """`value` in double quotes if it has spaces (sbatch reads #SBATCH lines
  word by word, honouring double quotes).

  >>> _sbatch_quote('/my runs/x')
  '"/my runs/x"'
  """
  if '"' in value:
    raise ValueError(f'{value!r}: a double quote cannot be written in an '
                     '#SBATCH line; pick a workdir without one.')
  return f'"{value}"' if re.search(r'\s', value) else value


def sbatch_script(*, experiment: str, workdir: str, nodes: int,
                  gpus_per_node: int, tasks: str, port: int, time: str,
                  partition: str, account: str, job_name: str, repo: str,
                  python: str, extra: Sequence[str]) -> str:
  """The text of the sbatch script."""
  per_gpu = tasks == 'gpu'
  tasks_per_node = gpus_per_node if per_gpu else 1
  lines = ['#!/bin/bash',
           f'#SBATCH --job-name={job_name or experiment}',
           f'#SBATCH --nodes={nodes}',
           f'#SBATCH --ntasks-per-node={tasks_per_node}',
           f'#SBATCH --gpus-per-node={gpus_per_node}',
           f'#SBATCH --cpus-per-task={8 if per_gpu else 8 * gpus_per_node}',
           f'#SBATCH --time={time}',
           f'#SBATCH --output={_sbatch_quote(workdir + "/slurm-%j.out")}']
  if partition:
    lines.append(f'#SBATCH --partition={partition}')
  if account:
    lines.append(f'#SBATCH --account={account}')
  main = ' '.join(shlex.quote(a) for a in [
      python, '-m', f'experiments.{experiment}.main', f'--workdir={workdir}',
      *extra])
  visible = (['export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"  # one GPU each']
             if per_gpu else [])
  task = os.path.join(workdir, 'slurm_task.sh')
  lines += [
      'set -euo pipefail',
      f'mkdir -p {shlex.quote(workdir)}',
      f'cd {shlex.quote(repo)}',
      '# The coordinator: process 0 on the first node of the allocation.',
      'export COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
      f'| head -n 1):{port}"',
      '# What each task runs (SLURM_PROCID etc. are set per task by srun).',
      f"cat > {shlex.quote(task)} <<'TASK'",
      'set -euo pipefail',
      *visible,
      f'exec {main} \\',
      '  --coordinator_address="$COORDINATOR" \\',
      '  --num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"',
      'TASK',
      f'srun --kill-on-bad-exit=1 bash {shlex.quote(task)}',
  ]
  return '\n'.join(lines) + '\n'


def main(argv):
  extra = argv[1:]
  workdir = os.path.abspath(_WORKDIR.value)
  try:
    checks.experiment(_EXPERIMENT.value)
    checks.slurm_time(_TIME.value)
    checks.config_files(extra)
    text = sbatch_script(
        experiment=_EXPERIMENT.value, workdir=workdir, nodes=_NODES.value,
        gpus_per_node=_GPUS.value, tasks=_TASKS.value, port=_PORT.value,
        time=_TIME.value, partition=_PARTITION.value, account=_ACCOUNT.value,
        job_name=_JOB_NAME.value, repo=_REPO.value, python=_PYTHON.value,
        extra=extra)
  except ValueError as e:
    raise app.UsageError(str(e))
  script = _SCRIPT.value or os.path.join(workdir, 'launch.sbatch')
  submit = ['sbatch', script]
  if _DRY_RUN.value:
    print(f'# {script}')
    print(text, end='')
    print(f'# then: {" ".join(shlex.quote(a) for a in submit)}')
    return 0
  os.makedirs(os.path.dirname(script), exist_ok=True)
  with open(script, 'w') as f:
    f.write(text)
  print(f'wrote {script}; running: {" ".join(submit)}', flush=True)
  sys.exit(subprocess.call(submit))


if __name__ == '__main__':
  app.run(main)
