"""When to measure: densely early, then at geometrically growing intervals.

The schedules themselves are `coherence_jax.schedules.Schedule` (public, so
a training loop of one's own measures on the same steps); these are the
experiments' spellings of them.
"""

from typing import List

from coherence_jax import schedules


def measurement_steps(total_steps: int, dense_until: int,
                      growth: float) -> List[int]:
  """Steps 0..dense_until every step, then ×growth apart, always the last.

  Args:
    total_steps: the last step (always measured).
    dense_until: measure every step up to here.
    growth: factor (> 1) between later measurement steps.

  Returns:
    The sorted steps to measure at.

  Example:
    >>> measurement_steps(100, 4, 2.0)
    [0, 1, 2, 3, 4, 8, 16, 32, 64, 100]
  """
  if growth <= 1.0:
    raise ValueError(f'growth: got {growth!r}; pass a factor > 1.')
  return schedules.Schedule(dense_until=int(dense_until), growth=growth,
                            total_steps=int(total_steps)).steps()


def every_steps(total_steps: int, every: int) -> List[int]:
  """Steps 0, every, 2·every, ... below total_steps, and total_steps.

  Example:
    >>> every_steps(10, 4)
    [0, 4, 8, 10]
  """
  return schedules.Schedule(every=int(every),
                            total_steps=int(total_steps)).steps()
