"""The experiments' data by name: datasets, corruption and batch order.

`DATASETS`: 'mnist5k' (embedded, offline), 'mnist', 'fashion_mnist', 'cifar10',
'cifar100' (tfds; in memory, or per example with stream=True) and
'imagenet2012' (tfds; streamed, resized and center-cropped). One not prepared
in data_dir (or TFDS_DATA_DIR) fails at once, saying how to prepare it.

  open_dataset   Data(spec, train, test), random-access sources; train carries
                 a `Corruption` (pure in (seed, index), exactly round(p·N)
                 examples picked), test is clean.
  batch_indices  step s's global batch, pure in (seed, s): resumes exactly.
  load, input_size, check_name, spec, num_classes, config_for
                 whole arrays, metadata and the config.data of a name.

Example:
  >>> data = open_dataset('mnist5k', corruption=Corruption('shuffled_pixels',
  ...                                                       p=0.25, seed=1))
  >>> batch = data.train.gather(batch_indices(seed=0, step=7, batch_size=100,
  ...                                         size=len(data.train)))
  >>> batch['image'].shape, int(data.train.corrupt(np.arange(4000)).sum())
  ((100, 28, 28, 1), 1000)
"""

import dataclasses
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from coherence_jax import data as cj_data
from coherence_jax.data import catalog
from coherence_jax.data import corruption as corruption_lib
from coherence_jax.data import order
from coherence_jax.data import sources
from coherence_jax.data import tfds_source
from coherence_jax.data.sources import Corruption

batch_indices = order.batch_indices

DATASETS = catalog.NAMES
CORRUPTIONS = corruption_lib.KINDS
NUM_CLASSES = 10  # mnist5k's; other datasets: num_classes(name).
Dataset = Dict[str, Dict[str, np.ndarray]]


def check_name(name: str) -> None:
  """ValueError naming config.data.name unless it is a known dataset."""
  catalog.spec(name)


def spec(name: str) -> catalog.DatasetSpec:
  """Image shape, num_classes, mean/std of dataset `name` (no data read)."""
  return catalog.spec(name)


def num_classes(name: str) -> int:
  return catalog.spec(name).num_classes


def _tfds(name: str, split: str, data_dir: Optional[str]):
  """The tfds data source of `name`, errors prefixed with the config fields."""
  try:
    return tfds_source.data_source(catalog.spec(name).tfds_name, split,
                                   data_dir=data_dir)
  except ValueError as e:
    raise ValueError(f'config.data.name: got {name!r} with config.data.'
                     f'data_dir={data_dir!r}: {e}') from e


def _arrays(name: str, split: str, data_dir: Optional[str]
            ) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 images, int32 labels) of an in-memory tfds split."""
  return sources.read_all(_tfds(name, split, data_dir))


def _check_in_memory(name: str) -> catalog.DatasetSpec:
  dataset = catalog.spec(name)
  if not dataset.in_memory:
    raise ValueError(f'config.data.name: {name!r} is streamed, not held in '
                     'memory; use open_dataset(...) and gather batches by '
                     'index.')
  return dataset


def load(name: str, split_seed: int = 0, *,
         data_dir: Optional[str] = None) -> Dataset:
  """{'train', 'test'} -> {'image' float32 in [0, 1], 'label' int32} arrays.

  For the in-memory datasets (all but imagenet2012). `split_seed` picks
  mnist5k's stratified split; the tfds datasets have fixed splits.
  """
  dataset = _check_in_memory(name)
  if name == 'mnist5k':
    return cj_data.load_mnist5k(seed=split_seed)
  out = {}
  for key, split in (('train', dataset.train_split),
                     ('test', dataset.test_split)):
    images, labels = _arrays(name, split, data_dir)
    out[key] = {'image': cj_data.preprocess.to_float(images),
                'label': np.array(labels)}
  return out


def input_size(dataset: Dataset) -> int:
  """Values per example image (the MLP's input width), e.g. 784."""
  return int(np.prod(dataset['train']['image'].shape[1:]))


class Data(NamedTuple):
  """A dataset opened by name: its spec and two random-access sources.

  `train` carries the run's corruption; `test` is clean. Both gather
  {'image' float32 [K, H, W, C], 'label' int32 [K]} by index
  (`sources.TransformedSource`); `train.corrupt(indices)` is the mask.
  """
  spec: catalog.DatasetSpec
  train: sources.TransformedSource
  test: sources.TransformedSource


def _base_sources(name: str, *, data_dir: Optional[str], split_seed: int,
                  image_size: Optional[int], num_threads: int,
                  stream: bool = False):
  dataset = catalog.spec(name)
  if name == 'mnist5k':
    splits = cj_data.load_mnist5k(seed=split_seed)
    return tuple(sources.ArraySource(splits[k]['image'], splits[k]['label'])
                 for k in ('train', 'test'))
  if dataset.in_memory and stream:  # fixed-size images, read per example
    return tuple(sources.StreamingSource(
        _tfds(name, split, data_dir), image_size=dataset.image_shape[0],
        resize=None, num_threads=num_threads)
                 for split in (dataset.train_split, dataset.test_split))
  if dataset.in_memory:
    return tuple(sources.ArraySource(*_arrays(name, split, data_dir))
                 for split in (dataset.train_split, dataset.test_split))
  size = image_size or dataset.image_shape[0]
  resize = round(size * 256 / 224)  # ImageNet's 224-of-256 center crop
  return tuple(sources.StreamingSource(
      _tfds(name, split, data_dir), image_size=size, resize=resize,
      num_threads=num_threads)
               for split in (dataset.train_split, dataset.test_split))


def open_dataset(name: str, *, data_dir: Optional[str] = None,
                 split_seed: int = 0,
                 corruption: Corruption = Corruption(),
                 normalize: bool = False, image_size: Optional[int] = None,
                 num_threads: int = 16, stream: bool = False) -> Data:
  """Dataset `name` as random-access train and test sources.

  Args:
    name: one of DATASETS.
    data_dir: tfds data_dir (None: TFDS_DATA_DIR or ~/tensorflow_datasets).
    split_seed: mnist5k's stratified train/test split.
    corruption: applied to the training examples (pure in seed and index).
    normalize: standardize images with the dataset's mean and std (after
      corruption); False keeps pixels in [0, 1].
    image_size: streamed datasets' crop size (imagenet2012: 224).
    num_threads: parallel reads of streamed datasets.
    stream: read an in-memory-sized tfds dataset per example too (a
      `StreamingSource`, nothing held) instead of whole into arrays; the
      examples are the same. imagenet2012 always streams; mnist5k never.

  Returns:
    `Data(spec, train, test)`; `spec.image_shape` is what the model sees.

  Raises:
    ValueError: an unknown name (listing DATASETS), a dataset not prepared in
      data_dir (how to prepare it; imagenet2012: where to put the manually
      downloaded files), a bad corruption kind.
  """
  dataset = catalog.spec(name)
  train, test = _base_sources(name, data_dir=data_dir, split_seed=split_seed,
                              image_size=image_size, num_threads=num_threads,
                              stream=stream)
  if image_size and not dataset.in_memory:
    dataset = dataclasses.replace(
        dataset, image_shape=(image_size, image_size, dataset.image_shape[2]))
  kwargs = dict(num_classes=dataset.num_classes, mean=dataset.mean,
                std=dataset.std, normalize=normalize)
  return Data(dataset,
              sources.TransformedSource(train, corruption=corruption, **kwargs),
              sources.TransformedSource(test, **kwargs))


def config_for(name: str, **fields):
  """A `config.data` ConfigDict for dataset `name` (what configs set).

  Streamed datasets (imagenet2012) also get data_dir (a placeholder: None
  reads TFDS_DATA_DIR; --config.data.data_dir=DIR), image_size (224) and
  num_threads (32 parallel reads per process). `fields` override or add.

  Example:
    >>> config_for('imagenet2012').image_size
    224
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  out = {'name': name, 'split_seed': 0}
  if not catalog.spec(name).in_memory:
    out.update(data_dir=ml_collections.config_dict.placeholder(str),
               image_size=catalog.spec(name).image_shape[0], num_threads=32)
  out.update(fields)
  return ml_collections.ConfigDict(out)
