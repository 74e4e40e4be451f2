"""A learning_order process SIGKILLed mid-run resumes to the same metrics and
per-example records as an uninterrupted run (the records live in the
checkpoints), with no duplicate or missing step."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.common import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30 * 40  # 30 epochs of 40 steps


def _command(workdir):
  return [sys.executable, '-m', 'experiments.learning_order.main',
          '--config=experiments/learning_order/configs/tiny.py',
          f'--workdir={workdir}', '--config.model.widths=(784,16,10)',
          '--config.train.epochs=30', '--config.train.checkpoint_every_epochs=1',
          '--config.measure.every_steps=10', '--config.mesh.data=1']


def _start(workdir):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.Popen(_command(workdir), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _checkpoints(run_dir):
  path = os.path.join(run_dir, 'checkpoints')
  if not os.path.isdir(path):
    return []
  return [int(n) for n in os.listdir(path) if n.isdigit()]


@pytest.mark.slow  # three processes, ~30-60 s
def test_sigkilled_run_resumes_to_the_same_metrics(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  uninterrupted = _start(a)
  victim = _start(b)
  run_dir = os.path.join(b, 'noise_0.50')
  deadline = time.time() + 300
  while not _checkpoints(run_dir) or max(_checkpoints(run_dir)) < 120:
    assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
    assert time.time() < deadline, 'no checkpoint within 300 s'
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL
  killed_rows = files.read_rows(os.path.join(run_dir, 'metrics.jsonl'))
  assert killed_rows and killed_rows[-1]['step'] < STEPS  # killed mid-run
  assert not os.path.exists(os.path.join(run_dir, 'records.npz'))
  resumed = _start(b)
  for proc in (resumed, uninterrupted):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]

  def rows(workdir):
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in
            files.read_rows(os.path.join(workdir, 'noise_0.50',
                                         'metrics.jsonl'))]
  got, want = rows(b), rows(a)
  assert [r['step'] for r in got] == list(range(0, STEPS, 10)) + [STEPS]
  assert got == want  # same numbers, bit for bit (same program, same CPU)
  with np.load(os.path.join(a, 'noise_0.50', 'records.npz')) as ra, \
       np.load(os.path.join(b, 'noise_0.50', 'records.npz')) as rb:
    for key in ('learnt_step', 'first_correct_step'):
      np.testing.assert_array_equal(ra[key], rb[key])
