"""Label corruption, deterministic given its seed; the mask is returned for saving."""

from typing import Dict

import numpy as np


def _check_fraction(p: float) -> None:
  if not 0.0 <= p <= 1.0:
    raise ValueError(f'p: got {p!r}; pass a probability in [0, 1].')


def random_labels(labels: np.ndarray, num_classes: int, p: float = 1.0,
                  seed: int = 0) -> Dict[str, np.ndarray]:
  """Each label replaced, with probability p, by a uniform random class.

  The papers' "random labels" (p = 1) and the ImageNet noise of 2003.07422.
  Returns {'label', 'selected' (drawn a new label), 'corrupt' (label changed)}.

  Example:
    >>> out = random_labels(np.arange(10) % 3, num_classes=3, p=1.0, seed=0)
    >>> out['label'].shape
    (10,)
  """
  _check_fraction(p)
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  selected = rng.random(labels.shape[0]) < p
  drawn = rng.integers(0, num_classes, size=labels.shape[0])
  new = np.where(selected, drawn, labels).astype(labels.dtype)
  return {'label': new, 'selected': selected, 'corrupt': new != labels}


def corrupt_labels(labels: np.ndarray, p: float,
                   seed: int = 0) -> Dict[str, np.ndarray]:
  """The ICLR 2020 reference rule: pick each example with probability p, permute
  the labels of the picked set. 'corrupt' = label actually changed (≈ 0.9 p).

  Returns {'label', 'selected', 'corrupt'}; keep the masks with the run.
  """
  _check_fraction(p)
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  selected = rng.random(labels.shape[0]) < p
  picked = np.flatnonzero(selected)
  new = labels.copy()
  new[picked] = labels[rng.permutation(picked)]
  return {'label': new, 'selected': selected, 'corrupt': new != labels}
