"""Random-access example sources and the batches of a run, gathered by index.

A source has `len(source)`, `source[i]` (grain's random-access protocol) and
`gather(indices) -> {'image' float32 [K, H, W, C], 'label' int32 [K]}`:
- `ArraySource`: arrays in memory (mnist5k, mnist, fashion_mnist, cifar).
- `StreamingSource`: a tfds data source read, decoded and preprocessed per
  example, in parallel threads (grain) — imagenet2012.
- `TransformedSource`: a source with a corruption (`corruption.apply`, a pure
  function of (seed, index)) and optional normalization, in that order.
`batches` yields one process's slice of each step's global batch
(`order.batch_indices`), so the data a step sees is a pure function of
(seed, step): a resumed run starts at its step and sees the same examples.

tensorflow_datasets and grain are imported by the functions that use them.

Example:
  >>> images = np.zeros((10, 4, 4, 1), np.uint8)
  >>> base = ArraySource(images, np.arange(10) % 3)
  >>> noisy = TransformedSource(base, num_classes=3, corruption=Corruption(
  ...     'uniform_labels', p=0.5, seed=0))
  >>> [b['label'].shape for _, b in batches(noisy, seed=0, batch_size=4,
  ...                                        start_step=2, num_steps=2)]
  [(4,), (4,)]
"""

import dataclasses
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from coherence_jax.data import corruption as corruption_lib
from coherence_jax.data import order
from coherence_jax.data import preprocess

Batch = Dict[str, np.ndarray]
_LABEL_KINDS = ('permuted_labels', 'uniform_labels', 'random_labels')


def _grain():
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("coherence_jax.data.sources needs grain for streamed "
                      "datasets: pip install -e '.[experiments]'.") from e
  return grain


def _indices(indices, length: int) -> np.ndarray:
  indices = np.asarray(indices)
  if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer)
                               or indices.size == 0):
    raise ValueError(f'indices: got shape {indices.shape}, dtype '
                     f'{indices.dtype}; pass integer example indices [K].')
  if indices.size and (indices.min() < 0 or indices.max() >= length):
    raise IndexError(f'indices: values range over [{int(indices.min())}, '
                     f'{int(indices.max())}]; pass indices in [0, {length}).')
  return indices.astype(np.int64)


class ArraySource:
  """Examples held in memory; gathering is array indexing.

  Args:
    images: [N, H, W, C], uint8 (scaled to [0, 1] when gathered) or float in
      [0, 1]. Kept as given (uint8 CIFAR-10 train: 150 MB).
    labels: integer labels [N].

  Example:
    >>> source = ArraySource(np.full((3, 2, 2, 1), 255, np.uint8), [0, 1, 2])
    >>> batch = source.gather([2, 0])
    >>> batch['image'].dtype, batch['label'].tolist()
    (dtype('float32'), [2, 0])
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images = np.asarray(images)
    self._labels = np.asarray(labels).astype(np.int32)
    if self.images.ndim != 4 or self._labels.shape != self.images.shape[:1]:
      raise ValueError(f'images, labels: got shapes {self.images.shape} and '
                       f'{self._labels.shape}; pass [N, H, W, C] and [N].')

  def __len__(self) -> int:
    return self._labels.shape[0]

  def __getitem__(self, index: int) -> Batch:
    return {'image': preprocess.to_float(self.images[index]),
            'label': self._labels[index]}

  def gather(self, indices) -> Batch:
    """{'image' float32 [K, H, W, C], 'label' int32 [K]} of `indices`."""
    indices = _indices(indices, len(self))
    return {'image': preprocess.to_float(self.images[indices]),
            'label': self._labels[indices]}

  def labels(self, indices) -> np.ndarray:
    """The int32 labels of `indices` (no images read)."""
    return self._labels[_indices(indices, len(self))]


class StreamingSource:
  """A tfds data source, each example decoded and preprocessed when read.

  Args:
    source: a random-access tfds data source (`tfds_source.data_source`),
      examples {'image': uint8 [h, w, C], 'label': int}.
    image_size: output height = width (resize shorter side, center crop).
    resize: the shorter side before the crop (ImageNet: 256 for 224); None:
      no resize, the stored images must already be image_size x image_size
      (a fixed-size dataset such as MNIST or CIFAR streamed, not held).
    num_threads: parallel reads of `gather` and `batches` (grain threads).

  Example (mock images have random sizes; each comes out 8 x 8):
    >>> import tensorflow_datasets as tfds
    >>> from coherence_jax.data import tfds_source
    >>> with tfds.testing.mock_data(num_examples=6):
    ...   raw = tfds_source.data_source('imagenet2012', 'validation')
    >>> StreamingSource(raw, image_size=8, resize=10).gather([5, 0])['image'].shape
    (2, 8, 8, 3)
  """

  def __init__(self, source, *, image_size: int, resize: Optional[int],
               num_threads: int = 16):
    self.source = source
    self.image_size = image_size
    self.resize = resize
    self.num_threads = num_threads

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Batch:
    example = self.source[int(index)]
    image = np.asarray(example['image'])
    if self.resize is not None:
      image = preprocess.resize_center_crop(image, self.image_size,
                                            self.resize)
    elif image.shape[:2] != (self.image_size, self.image_size):
      raise ValueError(f'example {int(index)}: got an image of shape '
                       f'{image.shape} with resize=None; pass resize (the '
                       f'shorter side before a {self.image_size}-pixel '
                       'center crop) for images of varying size.')
    return {'image': preprocess.to_float(image),
            'label': np.asarray(example['label'], np.int32)}

  def _read(self, indices: np.ndarray, read: Callable[[int], Any]) -> list:
    """[read(i) for i in indices], in parallel grain threads (order kept)."""
    if indices.size <= 1:
      return [read(int(i)) for i in indices]
    grain = _grain()
    reads = grain.MapDataset.source(indices).map(lambda i: read(int(i)))
    return list(reads.to_iter_dataset(grain.ReadOptions(
        num_threads=self.num_threads,
        prefetch_buffer_size=max(self.num_threads, 1))))

  def gather(self, indices) -> Batch:
    """Examples `indices`, read in parallel; float32 images, int32 labels."""
    indices = _indices(indices, len(self))
    return _stack(self._read(indices, self.__getitem__), self.image_size)

  def labels(self, indices) -> np.ndarray:
    """The labels of `indices`. Reads (and decodes) each example: tfds'
    numpy decoding has no label-only read without TensorFlow."""
    indices = _indices(indices, len(self))
    return np.array(self._read(indices, lambda i: self.source[i]['label']),
                    np.int32).reshape(indices.shape)


def _stack(examples, image_size: int) -> Batch:
  if not examples:
    return {'image': np.zeros((0, image_size, image_size, 3), np.float32),
            'label': np.zeros((0,), np.int32)}
  return {key: np.stack([e[key] for e in examples]) for key in ('image',
                                                               'label')}


@dataclasses.dataclass(frozen=True)
class Corruption:
  """Which corruption a run applies: `corruption.apply(kind, ..., p, seed)`.

  Attributes:
    kind: one of `corruption.KINDS` ('none' leaves the data clean).
    p: the fraction of training examples corrupted (exactly round(p·N)).
    seed: its seed.
  """
  kind: str = 'none'
  p: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.kind not in corruption_lib.KINDS:
      raise ValueError(f'kind: got {self.kind!r}; pass one of '
                       f'{corruption_lib.KINDS}.')
    corruption_lib.check_fraction(self.p)
    corruption_lib.check_seed(self.seed)
    if self.kind == 'random_labels' and self.p != 1.0:
      raise ValueError(f"p: got {self.p!r} for kind 'random_labels' (all "
                       "labels random); pass p=1.0, or kind='uniform_labels'.")


class TransformedSource:
  """`base` with a corruption, then normalization, applied when gathered.

  The corruption of example i is a function of (corruption.seed, i, N) only,
  so `gather`, `source[i]` and `batches` agree however the examples are
  asked for. Normalization comes after the corruption (Gaussian pixels use
  the [0, 1]-scale mean and std and come out standardized too).

  Args:
    base: an `ArraySource` or `StreamingSource` (clean examples).
    num_classes: labels are 0..num_classes-1.
    corruption: a `Corruption` (default: none).
    mean, std: per-channel pixel statistics in [0, 1] units (Gaussian pixels
      and normalization), e.g. from `catalog.spec(name)`.
    normalize: standardize images with mean and std after corruption.

  Example:
    >>> base = ArraySource(np.zeros((4, 2, 2, 1), np.uint8), [0, 1, 2, 3])
    >>> source = TransformedSource(base, num_classes=4,
    ...                            corruption=Corruption('random_labels'))
    >>> source.corrupt(np.arange(4)).dtype
    dtype('bool')
  """

  def __init__(self, base, *, num_classes: int,
               corruption: Corruption = Corruption(),
               mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
               normalize: bool = False):
    self.base = base
    self.num_classes = num_classes
    self.corruption = corruption
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.normalize = normalize

  def __len__(self) -> int:
    return len(self.base)

  def __getitem__(self, index: int) -> Batch:
    batch = self.gather(np.array([index]))
    return {key: value[0] for key, value in batch.items()}

  def finish(self, batch: Batch, indices, with_mask: bool = False) -> Batch:
    """Corrupts and normalizes clean `batch` of examples `indices`; with
    `with_mask`, also 'corrupt' (bool [K], as `corrupt(indices)`)."""
    c = self.corruption
    out = corruption_lib.apply(
        c.kind, batch, np.asarray(indices), num_examples=len(self.base),
        num_classes=self.num_classes, p=c.p, seed=c.seed, mean=self.mean,
        std=self.std, labels_of=self.base.labels)
    image = out['image']
    if self.normalize:
      image = preprocess.normalize(image, self.mean, self.std)
    finished = {'image': np.asarray(image, np.float32),
                'label': np.asarray(out['label'], np.int32)}
    if with_mask:
      finished['corrupt'] = np.asarray(out['corrupt'], bool)
    return finished

  def gather(self, indices, with_mask: bool = False) -> Batch:
    """{'image' float32, 'label' int32} of `indices`, corrupted, normalized;
    with `with_mask`, also their 'corrupt' mask (read with the examples:
    no second read, unlike `corrupt(indices)`)."""
    indices = _indices(indices, len(self))
    return self.finish(self.base.gather(indices), indices, with_mask)

  def corrupt(self, indices) -> np.ndarray:
    """Whether each of `indices` is corrupt (label changed / image replaced).

    Label kinds read only labels (a streamed source decodes those examples);
    image kinds read nothing.
    """
    indices = _indices(indices, len(self))
    c = self.corruption
    if c.kind == 'none':
      return np.zeros(indices.shape, bool)
    if c.kind not in _LABEL_KINDS:
      return corruption_lib.select(indices, num_examples=len(self.base),
                                   p=c.p, seed=c.seed)
    batch = {'image': None, 'label': self.base.labels(indices)}
    return corruption_lib.apply(
        c.kind, batch, indices, num_examples=len(self.base),
        num_classes=self.num_classes, p=c.p, seed=c.seed,
        labels_of=self.base.labels)['corrupt']


def _base(source):
  return source.base if isinstance(source, TransformedSource) else source


def batches(source, *, seed: int, batch_size: int, start_step: int = 0,
            num_steps: int, process_index: int = 0, process_count: int = 1,
            pool: Optional[np.ndarray] = None
            ) -> Iterator[Tuple[int, Batch]]:
  """(step, this process's batch) for steps start_step .. start_step+num_steps-1.

  Step s's global batch is `order.batch_indices(seed, s, batch_size,
  len(source))` (with `pool`: `pool[order.batch_indices(seed, s, batch_size,
  len(pool))]`); this process gets its `order.process_slice` (pass
  `jax.process_index(), jax.process_count()`), batch_size / process_count
  examples. A streamed source reads ahead in grain threads (per example,
  order kept); in-memory sources gather by array indexing.

  Args:
    source: an ArraySource, StreamingSource or TransformedSource.
    seed: the run's data-order seed.
    batch_size: the global batch size (a multiple of process_count).
    start_step: the first step (a resumed run's next step).
    num_steps: how many steps.
    process_index, process_count: this process and how many share a batch.
    pool: train on these examples only (indices into `source`); default all.

  Returns:
    An iterator of (step, {'image', 'label'}).

  Example:
    >>> source = ArraySource(np.zeros((8, 1, 1, 1)), np.arange(8))
    >>> [(s, b['label'].tolist()) for s, b in batches(
    ...     source, seed=0, batch_size=4, start_step=1, num_steps=1,
    ...     process_index=1, process_count=2)] == [(1, order.batch_indices(
    ...     0, 1, 4, 8)[2:].tolist())]
    True
  """
  pool = None if pool is None else _indices(pool, len(source))
  size = len(source) if pool is None else len(pool)
  part = order.process_slice(batch_size, process_index, process_count)
  local = part.stop - part.start

  def indices_of(step: int) -> np.ndarray:
    picked = order.batch_indices(seed, step, batch_size, size)[part]
    return picked if pool is None else pool[picked]

  if not isinstance(_base(source), StreamingSource):
    for step in range(start_step, start_step + num_steps):
      yield step, source.gather(indices_of(step))
    return

  base = _base(source)
  finish = (source.finish if isinstance(source, TransformedSource)
            else lambda batch, indices: batch)

  def read(position: int) -> Dict[str, Any]:
    index = int(indices_of(position // local)[position % local])
    return {**base[index], 'index': np.int64(index)}

  grain = _grain()
  positions = grain.MapDataset.range(start_step * local,
                                     (start_step + num_steps) * local)
  stream = positions.map(read).to_iter_dataset(grain.ReadOptions(
      num_threads=base.num_threads, prefetch_buffer_size=2 * local))
  for step, batch in zip(range(start_step, start_step + num_steps),
                         stream.batch(local)):
    indices = batch.pop('index')
    yield step, finish(batch, indices)


def read_all(source, num_threads: int = 16,
             transform: Optional[Callable[[Dict[str, Any]], Any]] = None
             ) -> Tuple[np.ndarray, np.ndarray]:
  """Every example of a tfds data source as (images, labels) arrays.

  Reads in parallel (grain threads); images are kept as stored (uint8).

  Args:
    source: a random-access source of {'image', 'label'} examples.
    num_threads: parallel reads.
    transform: applied to each example's image first (e.g. a resize).

  Returns:
    (images [N, ...], int32 labels [N]).

  Example:
    >>> import tensorflow_datasets as tfds
    >>> from coherence_jax.data import tfds_source
    >>> with tfds.testing.mock_data(num_examples=5):
    ...   images, labels = read_all(tfds_source.data_source('mnist', 'test'))
    >>> images.shape, images.dtype, labels.shape
    ((5, 28, 28, 1), dtype('uint8'), (5,))
  """
  grain = _grain()

  def read(example):
    image = np.asarray(example['image'])
    return {'image': image if transform is None else transform(image),
            'label': np.asarray(example['label'], np.int32)}

  stream = grain.MapDataset.source(source).map(read).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=256))
  examples = list(stream)
  if not examples:
    raise ValueError(f'source: no examples ({len(source)}); pass a non-empty '
                     'split.')
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples], np.int32))
