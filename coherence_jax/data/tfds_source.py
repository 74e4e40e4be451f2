"""tfds data sources and grain pipelines for image classification datasets.

`data_source`: a random-access `tfds.data_source` (array_record; no TensorFlow
needed) that fails fast, saying how to prepare a missing dataset; the
experiments read it by index through `sources` in the order of
`order.batch_indices`. `train_batches` is a standalone `grain.MapDataset`
pipeline instead (sharded per host, shuffled per epoch by grain from a seed,
normalised to {"image": float32 in [0, 1], "label": int32}, batched); its
order is grain's, not `order.batch_indices`. tensorflow_datasets and grain
(the `experiments` extra) are imported by the functions that use them, so
importing this module costs nothing.
"""

import difflib
from typing import Any, Dict, Optional

import numpy as np


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("coherence_jax.data.tfds_source needs tensorflow-datasets"
                      " and grain: pip install -e '.[experiments]'.") from e
  return tfds


def _grain():
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("coherence_jax.data.tfds_source needs grain: "
                      "pip install -e '.[experiments]'.") from e
  return grain


def _check_registered(tfds, name: str) -> None:
  """ValueError naming close tfds names when `name` is no tfds dataset."""
  from tensorflow_datasets.core import naming  # pylint: disable=g-import-not-at-top
  dataset, _ = naming.parse_builder_name_kwargs(name)
  if dataset.namespace:  # community datasets ('namespace:name'): tfds checks.
    return
  try:
    tfds.builder_cls(dataset.name)
  except tfds.core.DatasetNotFoundError:
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(dataset.name, known, n=5)
    hint = (f'close names: {", ".join(close)}' if close else
            'no close name; tfds.list_builders() lists them all')
    raise ValueError(f'name: {name!r} is not a tfds dataset ({hint}).') from None


def data_source(name: str, split: str, *, data_dir: Optional[str] = None,
                download: bool = False):
  """`tfds.data_source(name, split=...)` that fails fast and clearly.

  An unknown name is a ValueError listing close tfds names. With
  `download=False` (the default) a dataset that is not prepared under
  `data_dir` is a ValueError at once (no download, no retries) that says how
  to prepare it; `download=True` lets tfds download and prepare it here.

  Example (tfds' mock data stands in for a prepared data_dir):
    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=40):
    ...   source = data_source('mnist', 'train')
    >>> len(source), source[0]['image'].shape
    (40, (28, 28, 1))
  """
  if not split or not isinstance(split, str):
    raise ValueError(f'split: got {split!r}; pass a split such as "train" '
                     '(tfds returns {} for split=None).')
  tfds = _tfds()
  _check_registered(tfds, name)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            download=download)
  except Exception as e:  # tfds raises several types for a missing dataset.
    raise ValueError(_not_readable(tfds, name, split, data_dir, e)) from e


def _not_readable(tfds, name: str, split: str, data_dir: Optional[str],
                  error: Exception) -> str:
  """Why `name` could not be read under `data_dir`, and how to prepare it."""
  manual = ''
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    where, prepared = f' (looked in {builder.data_path})', builder.is_prepared()
    manual = ' '.join(
        (getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or '').split())
  except Exception:  # pylint: disable=broad-except
    where, prepared = '', False
  first_line = (str(error).splitlines() or [''])[0]
  why = ('is not prepared' if not prepared else
         f'is prepared but not readable ({type(error).__name__}: {first_line})')
  head = (f'dataset {name!r} (split {split!r}) {why} under data_dir='
          f'{data_dir!r}{where}.')
  copy = ('copy DIR here and pass data_dir=DIR (or set TFDS_DATA_DIR)')
  if manual:
    return (f'{head} tfds cannot download {name}: download the files by hand '
            f'and put them in tfds\' manual_dir (default DIR/downloads/manual):'
            f' {manual} Then, on that machine: `tfds build {name} '
            '--data_dir=DIR --manual_dir=MANUAL_DIR '
            f'--file_format=array_record`; {copy}.')
  return (f'{head} Prepare it on a machine with network: '
          f'`tfds build {name} --data_dir=DIR --file_format=array_record`, '
          f'{copy}; or pass download=True where there is network.')


def normalize_example(example: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """uint8 image -> float32 in [0, 1]; label -> int32."""
  return {'image': np.asarray(example['image'], np.float32) / 255.0,
          'label': np.asarray(example['label'], np.int32)}


def train_batches(source, *, batch_size: int, seed: int, num_epochs: int = 1,
                  shard_index: int = 0, shard_count: int = 1):
  """Shuffled, per-host-sharded batches (a `grain.MapDataset`); every epoch
  reshuffles from `seed`.

  Incomplete final batches are dropped (constant shapes for jit). Pass
  `shard_index=jax.process_index(), shard_count=jax.process_count()` on pods.

  Example:
    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=40):
    ...   source = data_source('mnist', 'train')
    >>> [b['image'].shape for b in train_batches(source, batch_size=16, seed=0)]
    [(16, 28, 28, 1), (16, 28, 28, 1)]
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size: got {batch_size}; pass a positive int.')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index: got {shard_index} for shard_count '
                     f'{shard_count}; pass 0 <= shard_index < shard_count.')
  dataset = _grain().MapDataset.source(source)[shard_index::shard_count]
  dataset = dataset.shuffle(seed=seed).repeat(num_epochs)
  return dataset.map(normalize_example).batch(batch_size, drop_remainder=True)


def _check_indices(indices, length: int) -> np.ndarray:
  """Integer indices of shape [K], each in [0, length)."""
  indices = np.asarray(indices)
  if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer)
                               or indices.size == 0):
    raise ValueError(f'indices: got shape {indices.shape} and dtype '
                     f'{indices.dtype}; pass integer indices of shape [K].')
  bad = indices[(indices < 0) | (indices >= length)]
  if bad.size:
    raise IndexError(
        f'indices: index {int(bad[0])} is out of range for a dataset of '
        f'length {length} ({bad.size} such); pass indices in [0, {length}) '
        '(negative indices are not counted from the end).')
  return indices.astype(np.int64)


def load_arrays(source, indices: Optional[np.ndarray] = None
                ) -> Dict[str, np.ndarray]:
  """Fixed examples as arrays, e.g. a coherence measurement sample or a test set.

  `indices` (default: all) must lie in [0, len(source)).

  Example:
    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=40):
    ...   source = data_source('mnist', 'train')
    >>> sample = load_arrays(source, np.arange(8))
    >>> sample['image'].shape, sample['label'].shape
    ((8, 28, 28, 1), (8,))
  """
  length = len(source)
  indices = (np.arange(length) if indices is None
             else _check_indices(indices, length))
  dataset = _grain().MapDataset.source(source)
  examples = [normalize_example(dataset[int(i)]) for i in indices]
  if not examples:
    raise ValueError(f'indices: no examples to load (source length {length}, '
                     f'{indices.size} indices); pass at least one index.')
  return {key: np.stack([e[key] for e in examples]) for key in ('image', 'label')}
