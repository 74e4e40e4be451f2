"""tfds data sources and grain pipelines for image classification datasets.

Random-access `tfds.data_source` (array_record; no TensorFlow needed) feeding a
`grain.MapDataset`: sharded per host, shuffled per epoch from a seed,
normalised to {"image": float32 in [0, 1], "label": int32}, batched.
"""

from typing import Any, Dict, Optional

import grain
import numpy as np
import tensorflow_datasets as tfds


def data_source(name: str, split: str, *, data_dir: Optional[str] = None,
                download: bool = False):
  """`tfds.data_source(name, split=...)` that fails fast and clearly.

  With `download=False` (the default) a dataset that is not prepared under
  `data_dir` is a ValueError at once, instead of minutes of download retries.

  Example:
    >>> source = data_source('mnist', 'train', data_dir='/data/tfds')
    >>> len(source), source[0]['image'].shape
    (60000, (28, 28, 1))
  """
  if not split:
    raise ValueError(f'split: got {split!r}; pass a split such as "train" '
                     '(tfds returns {} for split=None).')
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            download=download)
  except Exception as e:  # tfds raises several types for a missing dataset.
    raise ValueError(
        f'dataset {name!r} (split {split!r}) is not readable under data_dir='
        f'{data_dir!r}: prepare it where there is network with `tfds build '
        f'{name} --data_dir=DIR --file_format=array_record` and pass that '
        'data_dir, or pass download=True.') from e


def normalize_example(example: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """uint8 image -> float32 in [0, 1]; label -> int32."""
  return {'image': np.asarray(example['image'], np.float32) / 255.0,
          'label': np.asarray(example['label'], np.int32)}


def train_batches(source, *, batch_size: int, seed: int, num_epochs: int = 1,
                  shard_index: int = 0, shard_count: int = 1
                  ) -> grain.MapDataset:
  """Shuffled, per-host-sharded batches; every epoch reshuffles from `seed`.

  Incomplete final batches are dropped (constant shapes for jit). Pass
  `shard_index=jax.process_index(), shard_count=jax.process_count()` on pods.
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size: got {batch_size}; pass a positive int.')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index: got {shard_index} for shard_count '
                     f'{shard_count}; pass 0 <= shard_index < shard_count.')
  dataset = grain.MapDataset.source(source)[shard_index::shard_count]
  dataset = dataset.shuffle(seed=seed).repeat(num_epochs)
  return dataset.map(normalize_example).batch(batch_size, drop_remainder=True)


def load_arrays(source, indices: Optional[np.ndarray] = None
                ) -> Dict[str, np.ndarray]:
  """Fixed examples as arrays, e.g. a coherence measurement sample or a test set."""
  indices = np.arange(len(source)) if indices is None else np.asarray(indices)
  dataset = grain.MapDataset.source(source)
  examples = [normalize_example(dataset[int(i)]) for i in indices]
  return {key: np.stack([e[key] for e in examples]) for key in ('image', 'label')}
