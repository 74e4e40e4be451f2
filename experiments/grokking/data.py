"""Modular addition as a sequence task: [a, b, '='] -> (a + b) mod p.

Every one of the p² pairs is an example; a seeded permutation puts a fraction
of them in 'train' and the rest in 'test' (the held-out pairs). Tokens 0..p-1
are the numbers, token p is '=' (vocabulary p + 1).

Example:
  >>> split = modular_addition(5, train_fraction=0.4, seed=0)
  >>> split['train']['tokens'].shape, split['test']['label'].shape
  ((10, 3), (15,))
  >>> tokens, label = split['train']['tokens'][0], split['train']['label'][0]
  >>> int(tokens[2]), int(label) == (tokens[0] + tokens[1]) % 5
  (5, True)
"""

from typing import Dict

import numpy as np

Split = Dict[str, Dict[str, np.ndarray]]


def vocab_size(modulus: int) -> int:
  """Tokens of the task: the numbers 0..p-1 and '=' (token p)."""
  return modulus + 1


def train_size(modulus: int, train_fraction: float) -> int:
  """round(train_fraction · p²): the number of training pairs."""
  return int(round(train_fraction * modulus * modulus))


def modular_addition(modulus: int, train_fraction: float, seed: int) -> Split:
  """{'train', 'test'} -> {'tokens': int32 [N, 3], 'label': int32 [N]}.

  Args:
    modulus: p >= 2.
    train_fraction: share of the p² pairs used for training, in (0, 1);
      both sides must get at least one pair.
    seed: the split's seed (a pure function of it).

  Returns:
    The training pairs and the held-out pairs, each in the permutation's
    order (so a prefix is a uniform random sample).

  Raises:
    ValueError: a modulus < 2, or a fraction that leaves a side empty.
  """
  if not isinstance(modulus, int) or modulus < 2:
    raise ValueError(f'modulus: got {modulus!r}; pass an integer p >= 2.')
  n = train_size(modulus, train_fraction)
  if not 0 < n < modulus * modulus:
    raise ValueError(f'train_fraction: got {train_fraction!r}, which leaves '
                     f'{n} of {modulus * modulus} pairs for training; pass a '
                     'fraction in (0, 1) that leaves both sides non-empty.')
  a, b = (x.ravel() for x in np.meshgrid(np.arange(modulus),
                                         np.arange(modulus), indexing='ij'))
  tokens = np.stack([a, b, np.full_like(a, modulus)], axis=1).astype(np.int32)
  labels = ((a + b) % modulus).astype(np.int32)
  order = np.random.default_rng(seed).permutation(modulus * modulus)
  return {name: {'tokens': tokens[idx], 'label': labels[idx]}
          for name, idx in (('train', order[:n]), ('test', order[n:]))}
