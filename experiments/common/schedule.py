"""When to measure: densely early, then at geometrically growing intervals."""

from typing import List


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
  steps = list(range(0, min(dense_until, total_steps) + 1))
  step = float(max(steps[-1], 1))
  while True:
    step = max(step * growth, step + 1)
    if int(step) >= total_steps:
      break
    steps.append(int(step))
  if steps[-1] != total_steps:
    steps.append(total_steps)
  return steps
