"""The experiments' data: datasets by name, and the batch order of a run.

The order is a pure function of (seed, step), so a resumed run sees the same
batches as an uninterrupted one.

Example:
  >>> dataset = load('mnist5k', split_seed=0)
  >>> idx = batch_indices(seed=0, step=7, batch_size=100, size=4000)
"""

from typing import Dict

import numpy as np

from coherence_jax import data as cj_data

DATASETS = ('mnist5k',)
NUM_CLASSES = 10
Dataset = Dict[str, Dict[str, np.ndarray]]


def check_name(name: str) -> None:
  """ValueError naming config.data.name unless it is a known dataset."""
  if name not in DATASETS:
    raise ValueError(f'config.data.name: got {name!r}; pass one of '
                     f'{DATASETS} (the experiments run offline).')


def load(name: str, split_seed: int) -> Dataset:
  """{'train', 'test'} -> {'image', 'label'} numpy arrays of dataset `name`."""
  check_name(name)
  return cj_data.load_mnist5k(seed=split_seed)


def input_size(dataset: Dataset) -> int:
  """Values per example image (the MLP's input width), e.g. 784."""
  return int(np.prod(dataset['train']['image'].shape[1:]))


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The example order of one epoch; a pure function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(size)


def batch_indices(seed: int, step: int, batch_size: int,
                  size: int) -> np.ndarray:
  """Indices of step `step`'s batch: epochs reshuffle, the remainder is dropped.

  Args:
    seed: the run's seed.
    step: the global step.
    batch_size: examples per batch (<= size).
    size: examples in the training set.

  Returns:
    `batch_size` indices into the training set.
  """
  steps_per_epoch = size // batch_size
  order = epoch_order(seed, step // steps_per_epoch, size)
  return order[(step % steps_per_epoch) * batch_size:][:batch_size]
