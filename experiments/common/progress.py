"""Progress of long work through absl logging: steps/s, ETA, latest metrics.

`Reporter.maybe_log` is called after every dispatched step; at most every
`every_seconds` it waits for that step to finish (one sync, so steps/s is
real work, not dispatch) and logs one INFO line. `quiet_library_logs` keeps
absl at INFO for these lines while dropping orbax's INFO chatter (a line per
checkpoint save).

Example:
  >>> reporter = Reporter('noise_0.5', start=0, total=1000, every_seconds=10)
  >>> reporter.maybe_log(1, finite, {'step': 0, 'test_accuracy': 0.1})
"""

import logging as std_logging
import time
from typing import Any, Dict, Optional

from absl import logging
import jax


def format_row(row: Optional[Dict[str, Any]], limit: int = 8) -> str:
  """'key=value' for the row's first `limit` scalar numbers (no nested dicts).

  >>> format_row({'step': 3, 'test_accuracy': 0.91234, 'modules': {}})
  'step=3 test_accuracy=0.912'
  """
  if not row:
    return '-'
  items = [(k, v) for k, v in row.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)]
  return ' '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in items[:limit])


class Reporter:
  """Logs '<name>: step s/T (p %), x steps/s, ETA e s, latest: ...'."""

  def __init__(self, name: str, start: int, total: int,
               every_seconds: float = 10.0, clock=time.monotonic):
    if every_seconds < 0:
      raise ValueError(f'every_seconds: got {every_seconds}; pass >= 0.')
    self.name, self.total, self.every = name, total, every_seconds
    self._clock = clock
    self._start_step, self._start_time = start, clock()
    self._last = self._start_time
    self.lines = 0

  def maybe_log(self, step: int, done: Any = None,
                latest: Optional[Dict[str, Any]] = None) -> bool:
    """Logs if `every_seconds` passed since the last line; True if it did.

    Args:
      step: steps finished so far (the global step count).
      done: a device value of the latest step, waited for before timing.
      latest: the latest metrics row.
    """
    now = self._clock()
    if now - self._last < self.every:
      return False
    if done is not None:
      jax.block_until_ready(done)
      now = self._clock()
    self._last = now
    rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    logging.info('%s: step %d/%d (%.0f %%), %.2f steps/s, ETA %.0f s; '
                 'latest: %s', self.name, step, self.total,
                 100.0 * step / max(self.total, 1), rate, eta,
                 format_row(latest))
    self.lines += 1
    return True


class _DropLibraryInfo(std_logging.Filter):
  """Drops INFO (and lower) records logged from orbax's source files."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno > std_logging.INFO
            or '/orbax/' not in record.pathname.replace('\\', '/'))


def quiet_library_logs() -> None:
  """absl at INFO for the experiments' progress, orbax's INFO lines dropped."""
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
    handler.addFilter(_DropLibraryInfo())
