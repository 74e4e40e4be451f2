"""Label corruption, deterministic given its seed; the mask is returned for saving."""

import numbers
from typing import Dict

import numpy as np


def _is_int(value) -> bool:
  return (isinstance(value, (numbers.Integral, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _check_fraction(p) -> None:
  if (not isinstance(p, (numbers.Real, np.floating, np.integer))
      or isinstance(p, (bool, np.bool_)) or not 0.0 <= p <= 1.0):
    raise ValueError(f'p: got {p!r}; pass a probability in [0, 1].')


def _check_seed(seed) -> None:
  if not _is_int(seed) or seed < 0:
    raise ValueError(f'seed: got {seed!r}; pass a non-negative int (the '
                     'corruption is a function of its seed).')


def _check_labels(labels) -> np.ndarray:
  """Integer class labels of shape [N], as an array."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    hint = (' (one-hot labels? pass labels.argmax(-1))'
            if labels.ndim == 2 else '')
    raise ValueError(f'labels: got shape {labels.shape}; pass integer class '
                     f'labels of shape [N]{hint}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels: got dtype {labels.dtype}; pass integer class '
                     'labels of shape [N], e.g. labels.astype(np.int32).')
  return labels


def _check_num_classes(num_classes, labels: np.ndarray) -> None:
  if not _is_int(num_classes) or num_classes < 1:
    raise ValueError(f'num_classes: got {num_classes!r}; pass the number of '
                     'classes, an int >= 1.')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    lo, hi = int(labels.min()), int(labels.max())
    fix = (f'pass num_classes={hi + 1} if these labels have {hi + 1} classes'
           if lo >= 0 else 'map the labels to 0, 1, ..., num_classes - 1')
    raise ValueError(
        f'labels: values range over [{lo}, {hi}] but num_classes='
        f'{num_classes}; labels must lie in [0, num_classes): {fix}.')


def random_labels(labels: np.ndarray, num_classes: int, p: float = 1.0,
                  seed: int = 0) -> Dict[str, np.ndarray]:
  """Each label replaced, with probability p, by a uniform random class.

  The papers' "random labels" (p = 1) and the ImageNet noise of 2003.07422.
  `labels` are integer classes of shape [N] in [0, num_classes).
  Returns {'label', 'selected' (drawn a new label), 'corrupt' (label changed)}.

  Example:
    >>> out = random_labels(np.arange(10) % 3, num_classes=3, p=1.0, seed=0)
    >>> out['label'].shape
    (10,)
  """
  labels = _check_labels(labels)
  _check_num_classes(num_classes, labels)
  _check_fraction(p)
  _check_seed(seed)
  rng = np.random.default_rng(seed)
  selected = rng.random(labels.shape[0]) < p
  drawn = rng.integers(0, num_classes, size=labels.shape[0])
  new = np.where(selected, drawn, labels).astype(labels.dtype)
  return {'label': new, 'selected': selected, 'corrupt': new != labels}


def corrupt_labels(labels: np.ndarray, p: float,
                   seed: int = 0) -> Dict[str, np.ndarray]:
  """The ICLR 2020 reference rule: pick each example with probability p, permute
  the labels of the picked set. 'corrupt' = label actually changed (≈ 0.9 p).

  `labels` are integer classes of shape [N].
  Returns {'label', 'selected', 'corrupt'}; keep the masks with the run.

  Example:
    >>> out = corrupt_labels(np.arange(10) % 3, p=0.5, seed=0)
    >>> sorted(out)
    ['corrupt', 'label', 'selected']
  """
  labels = _check_labels(labels)
  _check_fraction(p)
  _check_seed(seed)
  rng = np.random.default_rng(seed)
  selected = rng.random(labels.shape[0]) < p
  picked = np.flatnonzero(selected)
  new = labels.copy()
  new[picked] = labels[rng.permutation(picked)]
  return {'label': new, 'selected': selected, 'corrupt': new != labels}
