"""When to measure: every N steps, or every step early and then log-spaced.

The experiments measure on one of two schedules, and a training loop of
one's own can call the same one (`should_measure(step)`):
  every N steps:  0, N, 2N, ... (and the last step, when `total_steps` is
                  given).
  log-spaced:     every step 0..dense_until, then steps a factor `growth`
                  apart (at least 1), and the last step. Coherence changes
                  fastest in the first steps (2008.01217: it collapses within
                  ~25 steps), slowly later.

Example:
  >>> log = Schedule(dense_until=4, growth=2.0, total_steps=100)
  >>> log.steps()
  [0, 1, 2, 3, 4, 8, 16, 32, 64, 100]
  >>> [s for s in range(20) if log.should_measure(s)]
  [0, 1, 2, 3, 4, 8, 16]
  >>> should_measure(300, every=100), should_measure(301, every=100)
  (True, False)
  >>> Schedule(every=4, total_steps=10).steps()
  [0, 4, 8, 10]
"""

import bisect
import dataclasses
import math
from typing import Dict, List, Optional, Tuple

from coherence_jax import _checks

# (dense_until, growth) -> the log-spaced steps after dense_until computed so far.
_LOG_POINTS: Dict[Tuple[int, float], List[int]] = {}


def _log_points(dense_until: int, growth: float, limit: int) -> List[int]:
  """The steps after `dense_until` up to at least `limit` (cached)."""
  points = _LOG_POINTS.setdefault((dense_until, growth), [])
  if not points:
    points.append(float(max(dense_until, 1)))   # the running float, first
  while int(points[-1]) < limit or len(points) == 1:
    step = points[-1]
    points.append(max(step * growth, step + 1))
  return points


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A measurement schedule: `every` N steps, or `dense_until` + `growth`.

  Attributes:
    every: measure at multiples of this many steps (with no other field
      but `total_steps`).
    dense_until: measure every step 0..dense_until, then ...
    growth: ... at steps this factor (> 1) apart, each at least one step
      after the one before (`int` of a running float product, as the
      experiments' `measurement_steps`).
    total_steps: the run's last step, always measured; None: a loop of
      unknown length (nothing after it is measured when it is given).

  Raises:
    ValueError: neither or both kinds given, or a bad value (named).
  """
  every: Optional[int] = None
  dense_until: Optional[int] = None
  growth: Optional[float] = None
  total_steps: Optional[int] = None

  def __post_init__(self):
    log = self.dense_until is not None or self.growth is not None
    if (self.every is None) == (not log):
      raise ValueError(
          f'Schedule: got every={self.every!r}, dense_until='
          f'{self.dense_until!r}, growth={self.growth!r}; pass every=N, or '
          'dense_until and growth (log-spaced), not both.')
    if self.every is not None and not (_checks.is_int(self.every)
                                       and self.every >= 1):
      raise ValueError(f'every: got {self.every!r}; pass a positive int.')
    if log:
      if not (_checks.is_int(self.dense_until) and self.dense_until >= 0):
        raise ValueError(f'dense_until: got {self.dense_until!r}; pass an '
                         'int >= 0 (measure every step up to it).')
      if not (isinstance(self.growth, (int, float)) and not isinstance(
          self.growth, bool) and math.isfinite(self.growth)
              and self.growth > 1):
        raise ValueError(f'growth: got {self.growth!r}; pass a factor > 1.')
    if self.total_steps is not None and not (
        _checks.is_int(self.total_steps) and self.total_steps >= 0):
      raise ValueError(f'total_steps: got {self.total_steps!r}; pass an int '
                       '>= 0 or None.')

  def should_measure(self, step: int) -> bool:
    """Whether to measure at `step` (before that step's update).

    Example:
      >>> Schedule(every=10).should_measure(20)
      True
    """
    step = int(step)
    total = self.total_steps
    if step < 0 or (total is not None and step > total):
      return False
    if step == total:
      return True
    if self.every is not None:
      return step % self.every == 0
    if step <= self.dense_until:
      return True
    points = _log_points(self.dense_until, float(self.growth), step)
    ints = [int(p) for p in points[1:]]   # strictly increasing
    i = bisect.bisect_left(ints, step)
    return i < len(ints) and ints[i] == step

  __call__ = should_measure

  def steps(self, total_steps: Optional[int] = None) -> List[int]:
    """Every step to measure at, sorted, up to the last.

    Args:
      total_steps: default `self.total_steps` (one must be given).

    Example:
      >>> Schedule(dense_until=2, growth=1.5).steps(10)   # 3, 4.5, 6.75, 10.1
      [0, 1, 2, 3, 4, 6, 10]
    """
    total = self.total_steps if total_steps is None else total_steps
    if total is None:
      raise ValueError('total_steps: the schedule of a loop of unknown length '
                       'has no list of steps; pass total_steps.')
    if self.every is not None:
      return sorted(set(range(0, total, self.every)) | {total})
    dense = list(range(0, min(self.dense_until, total) + 1))
    if self.dense_until >= total:
      return dense
    points = _log_points(self.dense_until, float(self.growth), total)
    later = [int(p) for p in points[1:] if int(p) < total]
    return dense + later + [total]


def should_measure(step: int, *, every: Optional[int] = None,
                   dense_until: Optional[int] = None,
                   growth: Optional[float] = None,
                   total_steps: Optional[int] = None) -> bool:
  """`Schedule(every, dense_until, growth, total_steps).should_measure(step)`.

  Example:
    >>> [s for s in range(12) if should_measure(s, dense_until=3, growth=2.)]
    [0, 1, 2, 3, 6]
  """
  return Schedule(every, dense_until, growth, total_steps).should_measure(step)
