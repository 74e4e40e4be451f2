r"""N processes of one experiment on this machine: the multi-host path, tested.

  python launch/multiprocess.py --experiment=real_vs_random --num_processes=2 \
      --devices_per_process=4 --workdir=/tmp/rvr_mp -- \
      --config=experiments/real_vs_random/configs/tiny.py

Starts N `python -m experiments.<name>.main --workdir=... <args after -->
--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i` on a
free port, on CPU with gloo collectives and `--devices_per_process` simulated
devices each (env JAX_PLATFORMS, JAX_NUM_CPU_DEVICES,
JAX_CPU_COLLECTIVES_IMPLEMENTATION). Each process's output goes to
<workdir>/logs/process_<i>.log. Waits for all; if one fails, or --timeout
seconds pass, kills the others (by their PIDs, process group included) and
exits non-zero. --dry_run prints the commands (one line each, env first).
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags

import checks  # launch/checks.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_EXPERIMENT = flags.DEFINE_string('experiment', 'real_vs_random',
                                  'Folder under experiments/ (its main.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The experiment workdir.',
                               required=True)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 2, 'Processes.',
                                      lower_bound=1)
_DEVICES = flags.DEFINE_integer('devices_per_process', 4,
                                'Simulated CPU devices per process.',
                                lower_bound=1)
_PORT = flags.DEFINE_integer('port', 0, 'Coordinator port; 0: a free one.',
                             lower_bound=0, upper_bound=65535)
_TIMEOUT = flags.DEFINE_float('timeout', 1800., 'Seconds before every '
                              'process is killed and the launch fails.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the commands, start nothing.')


def free_port() -> int:
  """A TCP port that was free a moment ago on 127.0.0.1."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def commands(experiment: str, workdir: str, num_processes: int,
             devices_per_process: int, port: int, extra: Sequence[str]
             ) -> List[Tuple[Dict[str, str], List[str]]]:
  """[(env overrides, argv)] of each process."""
  env = {'JAX_PLATFORMS': 'cpu',
         'JAX_NUM_CPU_DEVICES': str(devices_per_process),
         'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}
  out = []
  for i in range(num_processes):
    argv = [sys.executable, '-m', f'experiments.{experiment}.main',
            f'--workdir={workdir}', *extra,
            f'--coordinator_address=127.0.0.1:{port}',
            f'--num_processes={num_processes}', f'--process_id={i}']
    out.append((env, argv))
  return out


def format_command(env: Dict[str, str], argv: Sequence[str]) -> str:
  return ' '.join([f'{k}={v}' for k, v in env.items()]
                  + [shlex.quote(a) for a in argv])


def _kill(procs: Sequence[subprocess.Popen]) -> None:
  """SIGKILL each still-running process's own group (started by us)."""
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, signal.SIGKILL)  # group id == its PID (new session)
      except ProcessLookupError:
        pass
  for p in procs:
    p.wait()


def launch(cmds, workdir: str, timeout: float) -> int:
  """Runs the processes; 0 if all succeed, else the first failing code."""
  log_dir = os.path.join(workdir, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  procs, logs = [], []
  try:
    for i, (env, argv) in enumerate(cmds):
      log = open(os.path.join(log_dir, f'process_{i}.log'), 'w')
      logs.append(log)
      procs.append(subprocess.Popen(
          argv, cwd=REPO, env={**os.environ, **env,
                               'PYTHONPATH': os.pathsep.join(
                                   filter(None, [REPO, os.environ.get(
                                       'PYTHONPATH')]))},
          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
      print(f'process {i}: pid {procs[-1].pid}, log {log.name}', flush=True)
    deadline = time.time() + timeout
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        print(f'process {i} failed (exit {code}); see '
              f'{log_dir}/process_{i}.log; stopping the others.',
              file=sys.stderr, flush=True)
        return code
      if all(c == 0 for c in codes):
        print(f'all {len(procs)} processes finished.', flush=True)
        return 0
      if time.time() > deadline:
        print(f'timeout after {timeout:.0f}s; killing every process '
              f'(logs in {log_dir}).', file=sys.stderr, flush=True)
        return 124
      time.sleep(0.2)
  finally:
    _kill(procs)
    for log in logs:
      log.close()


def main(argv):
  extra = argv[1:]
  try:
    checks.experiment(_EXPERIMENT.value)
    checks.config_files(extra)
  except ValueError as e:
    raise app.UsageError(str(e))
  port = _PORT.value or free_port()
  cmds = commands(_EXPERIMENT.value, _WORKDIR.value, _NUM_PROCESSES.value,
                  _DEVICES.value, port, extra)
  if _DRY_RUN.value:
    for env, args in cmds:
      print(format_command(env, args))
    return 0
  code = launch(cmds, _WORKDIR.value, _TIMEOUT.value)
  sys.exit(code)


if __name__ == '__main__':
  app.run(main)
