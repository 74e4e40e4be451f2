"""Per-example records of a run, updated at measurement steps (pure numpy).

"When learnt" (the reference code's notion): the first step of the streak
of correct classifications that lasts to the end of the run, i.e. from which
on the example stays correctly classified; -1 while it is misclassified.
Also kept: the first step at which the example was ever classified
correctly. Both updates are idempotent at a step, as `loop.run` requires.

Example:
  >>> r = init(3)
  >>> r = update(r, np.array([True, False, True]), step=0)
  >>> r = update(r, np.array([True, True, False]), step=5)
  >>> r['learnt_step'].tolist(), r['first_correct_step'].tolist()
  ([0, 5, -1], [0, 5, 0])
"""

from typing import Dict

import numpy as np

Records = Dict[str, np.ndarray]


def init(size: int) -> Records:
  """Records of `size` examples, none learnt yet."""
  never = np.full((size,), -1, np.int32)
  return {'learnt_step': never, 'first_correct_step': never.copy()}


def update(records: Records, correct: np.ndarray, step: int) -> Records:
  """Records after a measurement at `step` that found `correct` [N] bool."""
  correct = np.asarray(correct, bool)
  learnt = np.asarray(records['learnt_step'])
  first = np.asarray(records['first_correct_step'])
  return {
      'learnt_step': np.where(correct, np.where(learnt >= 0, learnt, step),
                              -1).astype(np.int32),
      'first_correct_step': np.where(correct & (first < 0), step,
                                     first).astype(np.int32),
  }
