"""The batch order of a run: a pure function of (seed, step).

Every process computes the same global batch of each step and reads its own
contiguous slice of it, so a resumed run (any start step, any number of
processes) sees exactly the examples of an uninterrupted one. The experiments
gather `batch_indices` (`experiments.common.data.batch_indices` is this one)
or read `sources.batches`, which follows this order.

Example:
  >>> batch_indices(seed=0, step=7, batch_size=4, size=10).shape
  (4,)
  >>> process_slice(batch_size=8, process_index=1, process_count=2)
  slice(4, 8, None)
"""

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  order = np.random.default_rng([seed, epoch]).permutation(size)
  order.flags.writeable = False
  return order


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The example order of one epoch; a pure function of (seed, epoch).

  Args:
    seed: the run's seed (a non-negative int).
    epoch: the epoch, 0, 1, ...
    size: examples in the training set.

  Returns:
    A permutation of 0..size-1 (read-only; the last few are cached).

  Example:
    >>> sorted(epoch_order(0, 3, 5).tolist())
    [0, 1, 2, 3, 4]
  """
  return _epoch_order(int(seed), int(epoch), int(size))


def batch_indices(seed: int, step: int, batch_size: int,
                  size: int) -> np.ndarray:
  """Indices of step `step`'s global batch: epochs reshuffle, the remainder
  of each epoch is dropped.

  Args:
    seed: the run's seed.
    step: the global step.
    batch_size: examples per global batch (<= size).
    size: examples in the training set.

  Returns:
    `batch_size` indices into the training set.

  Raises:
    ValueError: batch_size is not in 1..size.

  Example:
    >>> a = batch_indices(seed=0, step=2, batch_size=3, size=10)
    >>> bool(np.all(a == batch_indices(0, 2, 3, 10)))   # same step, same batch
    True
  """
  if not 1 <= batch_size <= size:
    raise ValueError(f'batch_size: got {batch_size} for {size} examples; '
                     f'pass 1..{size}.')
  steps_per_epoch = size // batch_size
  order = epoch_order(seed, step // steps_per_epoch, size)
  start = (step % steps_per_epoch) * batch_size
  return order[start:start + batch_size]


def process_slice(batch_size: int, process_index: int,
                  process_count: int) -> slice:
  """The contiguous part of each global batch that one process reads.

  Args:
    batch_size: examples per global batch; a multiple of process_count.
    process_index: this process, e.g. `jax.process_index()`.
    process_count: processes, e.g. `jax.process_count()`.

  Returns:
    slice(process_index * b, (process_index + 1) * b), b = batch_size /
    process_count.

  Raises:
    ValueError: bad process_index, or batch_size not a multiple of
      process_count.

  Example:
    >>> process_slice(6, 0, 3)
    slice(0, 2, None)
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index: got {process_index} for '
                     f'{process_count} processes; pass 0..{process_count - 1}.')
  if batch_size % process_count:
    raise ValueError(f'batch_size: got {batch_size} for {process_count} '
                     'processes; pass a multiple of the process count (each '
                     'process reads an equal slice of the global batch).')
  local = batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def process_batch_indices(seed: int, step: int, batch_size: int, size: int,
                          process_index: int = 0,
                          process_count: int = 1) -> np.ndarray:
  """This process's slice of `batch_indices(seed, step, batch_size, size)`.

  Example:
    >>> both = batch_indices(0, 5, 8, 100)
    >>> halves = [process_batch_indices(0, 5, 8, 100, i, 2) for i in (0, 1)]
    >>> bool(np.all(np.concatenate(halves) == both))
    True
  """
  part = process_slice(batch_size, process_index, process_count)
  return batch_indices(seed, step, batch_size, size)[part]
