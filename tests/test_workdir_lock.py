"""One run per workdir (experiments/common/workdir_lock.py, entry.run) and
one-line errors for workdirs the file system refuses."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.common import entry
from experiments.common import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/real_vs_random/configs/tiny.py'
HOLD = ('import sys, time\n'
        'from experiments.common import workdir_lock\n'
        'workdir_lock.acquire(sys.argv[1])\n'
        'print("held", flush=True)\n'
        'time.sleep(120)\n')


def _holder(workdir):
  """A separate process holding `workdir` (started by this test)."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)],
                          cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def _acquire_in_a_process(workdir):
  return subprocess.run(
      [sys.executable, '-c', 'import sys\nfrom experiments.common import '
       'workdir_lock\nworkdir_lock.acquire(sys.argv[1])\nprint("ok")',
       str(workdir)], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
  """A real experiment main on a held workdir stops within seconds, in one
  line naming the holder's pid and host; nothing of the holder's is
  touched."""
  holder = _holder(tmp_path)
  try:
    started = time.time()
    out = subprocess.run(
        [sys.executable, '-m', 'experiments.real_vs_random.main',
         f'--workdir={tmp_path}', f'--config={TINY}'], cwd=REPO,
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert time.time() - started < 60
    assert f'in use by another run: pid {holder.pid} on host' in out.stderr
    assert 'Traceback' not in out.stderr
    assert not os.path.exists(tmp_path / 'config.json')
  finally:
    holder.kill()
    holder.wait()


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
  holder = _holder(tmp_path)
  busy = _acquire_in_a_process(tmp_path)
  assert busy.returncode != 0 and 'WorkdirBusyError' in busy.stderr
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  assert os.path.exists(tmp_path / workdir_lock.FILENAME)  # left behind...
  free = _acquire_in_a_process(tmp_path)  # ...but not locked
  assert free.returncode == 0, free.stderr


def test_released_lock_is_taken_again_in_process(tmp_path):
  held = workdir_lock.acquire(str(tmp_path))
  info = workdir_lock.holder(held.path)
  assert info['pid'] == os.getpid() and info['host'] and info['started']
  held.release()
  workdir_lock.acquire(str(tmp_path)).release()


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(SystemExit, match='is a file, not a directory') as e:
    entry.run(lambda c, w: None, None, str(path))
  assert str(path) in str(e.value.code)


def test_read_only_workdir_is_one_line(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise OSError(errno.EROFS, 'Read-only file system', str(tmp_path / 'w'))
  monkeypatch.setattr(os, 'makedirs', refuse)
  with pytest.raises(SystemExit, match='Read-only file system.*you can write'):
    entry.run(lambda c, w: None, None, str(tmp_path / 'w'))


class _WrappedByTheLibrary(Exception):
  pass


@pytest.mark.parametrize('code,fix', [
    (errno.ENOSPC, 'free space'), (errno.EROFS, 'writable file system'),
    (errno.EACCES, 'you can write')])
def test_file_system_failure_mid_run_is_one_line(tmp_path, code, fix):
  """A full disk (or a mount turned read-only) under a checkpoint write:
  the path and the cause, not the library's traceback."""
  target = str(tmp_path / 'checkpoints' / '8' / 'data')

  def train(config, workdir):
    try:
      raise OSError(code, os.strerror(code), target)
    except OSError as e:
      raise _WrappedByTheLibrary('orbax: save failed') from e

  with pytest.raises(SystemExit) as e:
    entry.run(train, None, str(tmp_path), cache_dir='off')
  message = str(e.value.code)
  assert message.startswith(f'error: {target}: {os.strerror(code)} '
                            f'({errno.errorcode[code]})')
  assert fix in message and '\n' not in message


def test_other_errors_keep_their_traceback(tmp_path):
  def train(config, workdir):
    raise KeyError('a bug')
  with pytest.raises(KeyError):
    entry.run(train, None, str(tmp_path), cache_dir='off')
  workdir_lock.acquire(str(tmp_path)).release()  # released on the way out


def test_a_failure_outside_the_workdir_gets_its_own_fix():
  error = OSError(errno.EACCES, 'Permission denied', '/data/tfds/x')
  message = entry.describe_file_system_error(error, '/runs/w')
  assert message.startswith('error: /data/tfds/x: Permission denied (EACCES)')
  assert 'fix its permissions' in message and 'pass a --workdir' not in message


def test_full_disk_under_a_real_loop_is_one_line(tmp_path, monkeypatch):
  """Fault injection: orbax's checkpoint write hits ENOSPC inside loop.run."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from experiments.common import loop  # pylint: disable=g-import-not-at-top

  def full(self, step, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device',
                  f'{self.directory}/{step}')
  monkeypatch.setattr(ocp.CheckpointManager, 'save', full)

  def train(config, workdir):
    loop.run(workdir, state={'w': jnp.zeros(2)}, total_steps=4,
             train_step=lambda s, t: (s, jnp.array(True)),
             measure=lambda s, t: {}, measure_steps={0}, checkpoint_every=2)

  with pytest.raises(SystemExit) as e:
    entry.run(train, None, str(tmp_path), cache_dir='off')
  assert str(e.value.code) == (
      f'error: {tmp_path}/checkpoints/2: No space left on device (ENOSPC) '
      f'while running in --workdir={tmp_path}; free space there, or pass a '
      '--workdir on another disk.')
