"""One run per workdir: an advisory lock on `<workdir>/.lock`.

Two runs writing one workdir corrupt it (interleaved metrics rows, one run's
orbax checkpoints deleted under the other). The run that holds the workdir
(in a multi-process run: process 0) holds an exclusive `fcntl.flock` on
`<workdir>/.lock` for its lifetime and writes who it is (pid, host, start
time) into the file; a second run is refused at once with a message naming
the holder. The kernel drops the lock when the holding process exits however
it exits (SIGKILL included), so a killed run never leaves a stale lock: the
file stays, with the dead holder's details, and the next run takes it over.

Example:
  >>> held = acquire('/tmp/run')    # WorkdirBusyError if another run has it
  >>> held.release()                # or let the process exit
"""

import fcntl
import json
import os
import socket
import time
from typing import Any, Dict

from absl import logging

FILENAME = '.lock'


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir."""


class WorkdirError(OSError):
  """The workdir cannot be created or written (a file, read-only, ...)."""


class Held:
  """A held workdir lock; released by `release()` or the process's exit."""

  def __init__(self, path: str, fd: int):
    self.path, self._fd = path, fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the file drops the flock
      self._fd = None


def make_workdir(workdir: str) -> None:
  """Creates `workdir`; WorkdirError naming it and the cause if it cannot.

  >>> make_workdir('/etc/passwd')
  Traceback (most recent call last):
  ...
  WorkdirError: --workdir=/etc/passwd: is a file, not a directory; ...
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir}: is a file, not '
                       'a directory; pass a directory (or a new path).')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'--workdir={workdir}: cannot be created '
                       f'({e.strerror}: {e.filename}); pass a directory you '
                       'can write.') from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(f'--workdir={workdir}: not writable '
                       '(read-only file system or permissions); pass a '
                       'directory you can write.')


def holder(path: str) -> Dict[str, Any]:
  """What the lock file at `path` says about its (last) holder ({} if
  nothing readable)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def acquire(workdir: str) -> Held:
  """Takes `<workdir>/.lock` (creating the workdir) or refuses.

  Raises:
    WorkdirBusyError: another live process holds it; names pid, host and
      start time.
    WorkdirError: the workdir cannot be created or written.
  """
  make_workdir(workdir)
  path = os.path.join(workdir, FILENAME)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f'--workdir={workdir}: cannot write its lock '
                       f'file {path} ({e.strerror}); pass a directory you can '
                       'write.') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    who = holder(path)
    raise WorkdirBusyError(
        f'--workdir={workdir} is in use by another run: pid '
        f'{who.get("pid", "?")} on host {who.get("host", "?")}, started '
        f'{who.get("started", "?")} (lock {path}). Wait for it to finish '
        '(or stop that process), or pass another --workdir.') from None
  except OSError as e:  # a file system without flock (e.g. some FUSE mounts)
    logging.warning('%s: cannot lock (%s); running WITHOUT the one-run-per-'
                    'workdir check: start only one run on this workdir.',
                    path, e.strerror)
    return Held(path, fd)
  info = {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S %z')}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
  return Held(path, fd)
