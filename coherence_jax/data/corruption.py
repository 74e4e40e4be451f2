"""Label and image corruption, deterministic given its seed; masks for saving.

Two families:
- `corrupt_labels`, `random_labels`: the reference code's rules, drawn for the
  whole training set in one sequence (a function of the seed and N).
- The index rules (`permuted_labels`, `uniform_labels`, `shuffled_pixels`,
  `gaussian_pixels`, `apply`): a pure function of (seed, example index) — and
  of N for the exact-fraction selection — so any batch, in any order, on any
  process, gets the same corruption as the whole set would. Each selects
  exactly round(p·N) examples, returns the new data and a boolean 'corrupt'
  mask. Per-index draws are a SplitMix64 hash of (seed, stream, index);
  per-image pixel draws come from numpy's PCG64 seeded with (seed, stream,
  index); both are the same on every platform.

Images are [K, H, W, C] floats in [0, 1] (before normalization).

Example:
  >>> labels = np.arange(10) % 3
  >>> out = uniform_labels(labels, np.arange(10), num_examples=10,
  ...                      num_classes=3, p=0.5, seed=0)
  >>> int(out['selected'].sum())          # exactly round(p * N)
  5
  >>> part = uniform_labels(labels[[7, 2]], np.array([7, 2]), num_examples=10,
  ...                       num_classes=3, p=0.5, seed=0)
  >>> bool(np.all(part['label'] == out['label'][[7, 2]]))   # any subset
  True
"""

import functools
import numbers
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from coherence_jax import _checks


def check_fraction(p) -> None:
  """ValueError naming `p` unless it is a probability in [0, 1]."""
  _check_fraction(p)


def check_seed(seed) -> None:
  """ValueError naming `seed` unless it is a non-negative int."""
  _check_seed(seed)


def _check_fraction(p) -> None:
  if (not isinstance(p, (numbers.Real, np.floating, np.integer))
      or isinstance(p, (bool, np.bool_)) or not 0.0 <= p <= 1.0):
    raise ValueError(f'p: got {p!r}; pass a probability in [0, 1].')


def _check_seed(seed) -> None:
  if not _checks.is_int(seed) or seed < 0:
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
  if not _checks.is_int(num_classes) or num_classes < 1:
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


# --- Index rules: a pure function of (seed, example index) -------------------

KINDS = ('none', 'permuted_labels', 'uniform_labels', 'random_labels',
         'shuffled_pixels', 'random_pixels', 'gaussian_pixels')
# Independent hash streams, one per use of randomness.
_SELECT, _PERMUTE, _LABEL, _PIXELS, _PIXELS_PER_IMAGE, _NORMAL = range(1, 7)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finalizer (a bijection of uint64 with good avalanche)."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _hash(seed: int, stream: int, *coords: np.ndarray) -> np.ndarray:
  """uint64 hash of (seed, stream, *coords), broadcast over the coords."""
  with np.errstate(over='ignore'):
    h = _mix(np.asarray(seed, np.uint64) * _GOLDEN + np.uint64(stream))
    for c in coords:
      h = _mix(h ^ _mix((np.asarray(c).astype(np.uint64) + np.uint64(1))
                        * _GOLDEN))
  return np.asarray(h, np.uint64)


def _uniform(seed: int, stream: int, *coords: np.ndarray) -> np.ndarray:
  """float64 in [0, 1), one per broadcast coordinate."""
  return (_hash(seed, stream, *coords) >> np.uint64(11)).astype(
      np.float64) * 2.0**-53


def _image_rng(seed: int, stream: int, index) -> np.random.Generator:
  """numpy's PCG64 seeded by (seed, stream, index): one image's draws."""
  return np.random.default_rng([int(seed), stream, int(index)])


def _check_count(num_examples) -> None:
  if not _checks.is_int(num_examples) or num_examples < 1:
    raise ValueError(f'num_examples: got {num_examples!r}; pass the size of '
                     'the training set (an int >= 1).')


def _check_indices(indices, num_examples: int) -> np.ndarray:
  indices = np.asarray(indices)
  if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer)
                               or indices.size == 0):
    raise ValueError(f'indices: got shape {indices.shape}, dtype '
                     f'{indices.dtype}; pass integer example indices [K].')
  if indices.size and (indices.min() < 0 or indices.max() >= num_examples):
    raise ValueError(
        f'indices: values range over [{int(indices.min())}, '
        f'{int(indices.max())}]; pass indices in [0, num_examples='
        f'{num_examples}).')
  return indices.astype(np.int64)


@functools.lru_cache(maxsize=8)
def _selection(num_examples: int, p: float, seed: int):
  """(selected [N], source [N]): exactly round(p·N) picked examples, and the
  permutation of the picked set (new label i = old label source[i])."""
  count = int(np.floor(p * num_examples + 0.5))
  selected = np.zeros(num_examples, bool)
  if count:
    keys = _hash(seed, _SELECT, np.arange(num_examples))
    selected[np.argpartition(keys, count - 1)[:count]] = True
  source = np.arange(num_examples)
  picked = np.flatnonzero(selected)
  source[picked] = picked[np.argsort(_hash(seed, _PERMUTE, picked),
                                     kind='stable')]
  selected.flags.writeable = False
  source.flags.writeable = False
  return selected, source


def select(indices: np.ndarray, *, num_examples: int, p: float,
           seed: int) -> np.ndarray:
  """Whether each example is one of exactly round(p·N) picked examples.

  Args:
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    p: the fraction to pick, in [0, 1].
    seed: a non-negative int.

  Returns:
    bool [K]; over all N indices exactly round(p·N) are True.

  Example:
    >>> int(select(np.arange(1000), num_examples=1000, p=0.25, seed=3).sum())
    250
  """
  _check_count(num_examples)
  indices = _check_indices(indices, num_examples)
  _check_fraction(p)
  _check_seed(seed)
  return _selection(int(num_examples), float(p), int(seed))[0][indices]


def permutation_sources(indices: np.ndarray, *, num_examples: int, p: float,
                        seed: int) -> np.ndarray:
  """Where each example's permuted label comes from (ICLR 2020 rule).

  Exactly round(p·N) examples are picked and their labels permuted among
  themselves: new label of i = old label of `sources[i]` (i itself when not
  picked). For a streamed dataset read the labels of these indices.

  Args:
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    p: the fraction whose labels are permuted, in [0, 1].
    seed: a non-negative int.

  Returns:
    int64 [K] indices in [0, num_examples).

  Example:
    >>> src = permutation_sources(np.arange(6), num_examples=6, p=1.0, seed=0)
    >>> sorted(src.tolist())
    [0, 1, 2, 3, 4, 5]
  """
  _check_count(num_examples)
  indices = _check_indices(indices, num_examples)
  _check_fraction(p)
  _check_seed(seed)
  return _selection(int(num_examples), float(p), int(seed))[1][indices]


def permuted_labels(labels: np.ndarray, *, p: float,
                    seed: int) -> Dict[str, np.ndarray]:
  """The whole training set's labels, a fraction p permuted among themselves.

  The ICLR 2020 rule with an exact fraction: exactly round(p·N) examples
  are picked (`select`), their labels permuted (`permutation_sources`).
  'corrupt' = label actually changed (≈ p·(1 − 1/C) for C balanced classes).

  Args:
    labels: all N integer labels [N].
    p: the fraction picked, in [0, 1].
    seed: a non-negative int.

  Returns:
    {'label' [N], 'selected' bool [N], 'corrupt' bool [N]}.

  Example:
    >>> labels = np.arange(100) % 10
    >>> out = permuted_labels(labels, p=0.5, seed=0)
    >>> int(out['selected'].sum()), bool(np.all(np.sort(out['label'])
    ...                                          == np.sort(labels)))
    (50, True)
  """
  labels = _check_labels(labels)
  n = labels.shape[0]
  everything = np.arange(n)
  source = permutation_sources(everything, num_examples=n, p=p, seed=seed)
  new = labels[source]
  return {'label': new,
          'selected': select(everything, num_examples=n, p=p, seed=seed),
          'corrupt': new != labels}


def uniform_labels(labels: np.ndarray, indices: np.ndarray, *,
                   num_examples: int, num_classes: int, p: float,
                   seed: int) -> Dict[str, np.ndarray]:
  """A fraction p of the examples get a uniformly random label (2003.07422).

  Exactly round(p·N) examples are picked (`select`); each draws a class
  uniformly from its (seed, index), possibly its own; 'corrupt' = label
  actually changed (≈ p·(1 − 1/C)). p = 1 is the papers' "random labels".

  Args:
    labels: the true labels of `indices`, integers [K].
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    num_classes: labels are 0..num_classes-1.
    p: the fraction relabelled, in [0, 1].
    seed: a non-negative int.

  Returns:
    {'label' [K], 'selected' bool [K], 'corrupt' bool [K]}.

  Example:
    >>> out = uniform_labels(np.zeros(4, np.int32), np.arange(4),
    ...                      num_examples=4, num_classes=10, p=1.0, seed=0)
    >>> out['label'].dtype, bool(np.all(out['selected']))
    (dtype('int32'), True)
  """
  labels = _check_labels(labels)
  _check_num_classes(num_classes, labels)
  chosen = select(indices, num_examples=num_examples, p=p, seed=seed)
  if labels.shape != chosen.shape:
    raise ValueError(f'labels: got shape {labels.shape} for {chosen.size} '
                     'indices; pass the labels of exactly these examples.')
  drawn = np.floor(_uniform(seed, _LABEL, np.asarray(indices))
                   * num_classes).astype(labels.dtype)
  new = np.where(chosen, drawn, labels).astype(labels.dtype)
  return {'label': new, 'selected': chosen, 'corrupt': new != labels}


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images: got shape {images.shape}; pass images '
                     '[K, height, width, channels].')
  return images


def shuffled_pixels(images: np.ndarray, indices: np.ndarray, *,
                    num_examples: int, seed: int, per_image: bool = False,
                    p: float = 1.0) -> Dict[str, np.ndarray]:
  """Pixel positions permuted (Zhang et al. 2017); channels stay together.

  `per_image=False`: one permutation of the H·W positions, the same for every
  image ("shuffled pixels"); `per_image=True`: each image its own, from its
  (seed, index) ("random pixels"). A fraction p of the examples (exactly
  round(p·N)) is shuffled.

  Args:
    images: the images of `indices`, [K, H, W, C].
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    seed: a non-negative int.
    per_image: one permutation per image instead of one for all.
    p: the fraction shuffled, in [0, 1].

  Returns:
    {'image' [K, H, W, C] (same dtype), 'corrupt' bool [K]}.

  Example:
    >>> images = np.arange(2 * 2 * 2 * 1.0).reshape(2, 2, 2, 1)
    >>> out = shuffled_pixels(images, np.arange(2), num_examples=2, seed=0)
    >>> sorted(out['image'][0].ravel()) == sorted(images[0].ravel())
    True
  """
  images = _check_images(images)
  chosen = select(indices, num_examples=num_examples, p=p, seed=seed)
  k, h, w, c = images.shape
  if chosen.size != k:
    raise ValueError(f'images: got {k} images for {chosen.size} indices; '
                     'pass the images of exactly these examples.')
  flat = images.reshape(k, h * w, c)
  positions = np.arange(h * w)
  if per_image:
    order = np.stack([_image_rng(seed, _PIXELS_PER_IMAGE, i).permutation(h * w)
                      for i in np.asarray(indices)]).reshape(k, h * w)
  else:
    order = np.broadcast_to(
        np.argsort(_hash(seed, _PIXELS, positions), kind='stable'), (k, h * w))
  shuffled = np.take_along_axis(flat, order[:, :, None], axis=1)
  new = np.where(chosen[:, None, None], shuffled, flat).reshape(images.shape)
  return {'image': new, 'corrupt': chosen.copy()}


def gaussian_pixels(images: np.ndarray, indices: np.ndarray, *,
                    num_examples: int, seed: int, mean: Sequence[float],
                    std: Sequence[float],
                    p: float = 1.0) -> Dict[str, np.ndarray]:
  """Images replaced by Gaussian noise with the data's per-channel mean and
  std (Zhang et al. 2017), each image's from its (seed, index).

  Args:
    images: the images of `indices`, [K, H, W, C] in [0, 1].
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    seed: a non-negative int.
    mean, std: per-channel pixel statistics (C values, or one), images in
      [0, 1]; e.g. `catalog.spec(name).mean`.
    p: the fraction replaced, in [0, 1].

  Returns:
    {'image' float32 [K, H, W, C] (not clipped), 'corrupt' bool [K]}.

  Example:
    >>> out = gaussian_pixels(np.zeros((2, 8, 8, 1)), np.arange(2),
    ...                       num_examples=2, seed=0, mean=[0.5], std=[0.1])
    >>> out['image'].shape, bool(np.all(out['corrupt']))
    ((2, 8, 8, 1), True)
  """
  images = _check_images(images)
  chosen = select(indices, num_examples=num_examples, p=p, seed=seed)
  k, h, w, c = images.shape
  if chosen.size != k:
    raise ValueError(f'images: got {k} images for {chosen.size} indices; '
                     'pass the images of exactly these examples.')
  mean = np.asarray(mean, np.float64).reshape(-1)
  std = np.asarray(std, np.float64).reshape(-1)
  if mean.size not in (1, c) or std.size not in (1, c) or np.any(std < 0):
    raise ValueError(f'mean, std: got {mean.tolist()} and {std.tolist()} for '
                     f'{c} channels; pass {c} (or 1) values each, std >= 0.')
  normal = np.stack([_image_rng(seed, _NORMAL, i).standard_normal((h, w, c))
                     for i in np.asarray(indices)]).reshape(images.shape)
  noise = (mean + std * normal).astype(np.float32)
  new = np.where(chosen[:, None, None, None], noise,
                 images.astype(np.float32))
  return {'image': new, 'corrupt': chosen.copy()}


def apply(kind: str, batch: Dict[str, np.ndarray], indices: np.ndarray, *,
          num_examples: int, num_classes: int, p: float, seed: int,
          mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
          labels_of: Optional[Callable[[np.ndarray], np.ndarray]] = None
          ) -> Dict[str, np.ndarray]:
  """Corruption `kind` of the examples `indices`, whose clean data is `batch`.

  Kinds (`KINDS`): 'none'; 'permuted_labels' (ICLR 2020); 'uniform_labels'
  (2003.07422); 'random_labels' (all labels uniform; p must be 1);
  'shuffled_pixels' (one permutation for all images); 'random_pixels' (one
  per image); 'gaussian_pixels' (noise with the data's mean and std).

  Args:
    kind: one of KINDS.
    batch: {'image' [K, H, W, C] in [0, 1], 'label' [K]} of `indices`.
    indices: example indices [K] in [0, num_examples).
    num_examples: N, the size of the training set.
    num_classes: labels are 0..num_classes-1.
    p: the fraction corrupted.
    seed: a non-negative int.
    mean, std: per-channel statistics ('gaussian_pixels').
    labels_of: `labels_of(indices) -> clean labels` of any examples
      ('permuted_labels': the labels come from other examples).

  Returns:
    {'image', 'label', 'corrupt' bool [K]}; unchanged entries are the
    inputs themselves.

  Raises:
    ValueError: an unknown kind (listing KINDS), 'random_labels' with p != 1,
      'permuted_labels' without labels_of.

  Example:
    >>> batch = {'image': np.zeros((3, 4, 4, 1)), 'label': np.array([0, 1, 2])}
    >>> out = apply('random_labels', batch, np.arange(3), num_examples=3,
    ...             num_classes=10, p=1.0, seed=0)
    >>> sorted(out)
    ['corrupt', 'image', 'label']
  """
  if kind not in KINDS:
    raise ValueError(f'kind: got {kind!r}; pass one of {KINDS}.')
  image, label = batch['image'], batch['label']
  if kind == 'none':
    return {'image': image, 'label': label,
            'corrupt': np.zeros(np.shape(label)[0], bool)}
  if kind == 'random_labels' and p != 1.0:
    raise ValueError(f"p: got {p!r} for kind 'random_labels' (all labels "
                     "random); pass p=1.0, or kind='uniform_labels'.")
  if kind == 'permuted_labels':
    if labels_of is None:
      raise ValueError("labels_of: pass labels_of(indices) -> labels for kind "
                       "'permuted_labels' (labels come from other examples).")
    sources = permutation_sources(indices, num_examples=num_examples, p=p,
                                  seed=seed)
    new = np.asarray(labels_of(sources)).astype(np.asarray(label).dtype)
    return {'image': image, 'label': new, 'corrupt': new != label}
  if kind in ('uniform_labels', 'random_labels'):
    out = uniform_labels(label, indices, num_examples=num_examples,
                         num_classes=num_classes, p=p, seed=seed)
    return {'image': image, 'label': out['label'], 'corrupt': out['corrupt']}
  if kind == 'gaussian_pixels':
    out = gaussian_pixels(image, indices, num_examples=num_examples, seed=seed,
                          mean=mean, std=std, p=p)
  else:
    out = shuffled_pixels(image, indices, num_examples=num_examples, seed=seed,
                          per_image=kind == 'random_pixels', p=p)
  return {'image': out['image'], 'label': label, 'corrupt': out['corrupt']}
