"""Fixed measurement sets, by index: the same examples at every measurement.

The papers measure coherence on a FIXED sample of training examples (and its
pristine and corrupt parts) and on held-out examples. These are index arrays,
a pure function of (seed, sizes, corrupt mask): a resumed run that draws them
again gets the same ones (save them with the run to keep a record).

Example:
  >>> sets = measurement_sets(seed=0, train_size=100, test_size=50,
  ...                         sample_size=10, held_out_size=5)
  >>> {name: len(idx) for name, idx in sets.items()}
  {'train': 10, 'pristine': 10, 'corrupt': 0, 'held_out': 5}
"""

from typing import Callable, Dict, Optional

import numpy as np

from coherence_jax import _checks

SETS = ('train', 'pristine', 'corrupt', 'held_out')


def _check_size(name: str, value, upper: int, what: str) -> int:
  if not _checks.is_int(value) or not 0 <= value <= upper:
    raise ValueError(f'{name}: got {value!r}; pass 0..{upper} ({what}).')
  return int(value)


def measurement_sets(*, seed: int, train_size: int, test_size: int,
                     sample_size: int, held_out_size: int,
                     is_corrupt: Optional[Callable[[np.ndarray],
                                                   np.ndarray]] = None
                     ) -> Dict[str, np.ndarray]:
  """Index arrays of the fixed samples a run measures on.

  Args:
    seed: picks the samples (a non-negative int).
    train_size, test_size: examples in the training and held-out splits.
    sample_size: training examples in the 'train' sample.
    held_out_size: held-out examples in the 'held_out' sample.
    is_corrupt: `is_corrupt(indices) -> bool [K]` of training examples, e.g.
      `TransformedSource.corrupt`; None: nothing is corrupt.

  Returns:
    {'train': sample_size training indices (sorted),
     'pristine': the not-corrupt ones of 'train', 'corrupt': the corrupt
     ones (together exactly 'train'), 'held_out': held_out_size test
     indices (sorted)}, all int64.

  Raises:
    ValueError: a size out of range (the message names it).

  Example:
    >>> sets = measurement_sets(seed=0, train_size=10, test_size=4,
    ...                         sample_size=6, held_out_size=4,
    ...                         is_corrupt=lambda idx: idx % 2 == 1)
    >>> bool(np.all(sets['corrupt'] % 2 == 1)), sets['held_out'].tolist()
    (True, [0, 1, 2, 3])
  """
  if not _checks.is_int(seed) or seed < 0:
    raise ValueError(f'seed: got {seed!r}; pass a non-negative int.')
  train_size = _check_size('train_size', train_size, 2**62, 'examples')
  test_size = _check_size('test_size', test_size, 2**62, 'examples')
  sample_size = _check_size('sample_size', sample_size, train_size,
                            'at most the training set size')
  held_out_size = _check_size('held_out_size', held_out_size, test_size,
                              'at most the held-out set size')
  train_rng = np.random.default_rng([int(seed), 0])
  test_rng = np.random.default_rng([int(seed), 1])
  train = np.sort(train_rng.choice(train_size, sample_size, replace=False))
  held_out = np.sort(test_rng.choice(test_size, held_out_size, replace=False))
  corrupt = (np.zeros(train.shape, bool) if is_corrupt is None
             else np.asarray(is_corrupt(train), bool))
  if corrupt.shape != train.shape:
    raise ValueError(f'is_corrupt: returned shape {corrupt.shape} for '
                     f'{train.size} indices; return one bool per index.')
  return {'train': train.astype(np.int64),
          'pristine': train[~corrupt].astype(np.int64),
          'corrupt': train[corrupt].astype(np.int64),
          'held_out': held_out.astype(np.int64)}
