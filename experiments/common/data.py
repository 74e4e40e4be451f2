"""The experiments' data: datasets by name, corruption, batch order, and the
fixed measurement sets of a run.

`config.data.name` is one of `DATASETS`: 'mnist5k' (embedded, offline, the
default), 'mnist', 'fashion_mnist', 'cifar10', 'cifar100' (tfds
`data_source`, read whole into memory) and 'imagenet2012' (tfds, streamed:
decoded, resized and center-cropped per example in grain threads). A dataset
not prepared in `config.data.data_dir` (or TFDS_DATA_DIR) fails at once,
naming the dataset, the data_dir and how to prepare it elsewhere.

Batches are gathered by index: step s reads `batch_indices(seed, s, B, N)`
(each process its slice, `process_batch_indices`), a pure function of
(seed, step), so a resumed run sees the same batches as an uninterrupted one.
The corruption of an example is a pure function of (seed, its index) too.

The config fields read (`open_from_config`; all but `name` optional):
  config.data.name          one of DATASETS
  config.data.data_dir      tfds data_dir (default None: TFDS_DATA_DIR)
  config.data.split_seed    mnist5k's train/test split (default 0)
  config.data.normalize     standardize with the dataset's mean/std (False)
  config.data.image_size    imagenet2012's crop size (224)
  config.data.stream        stream mnist..cifar100 too, per example (False)
  config.data.num_threads   parallel reads of streamed datasets (16)
  config.data.corruption    kind / p / seed (`coherence_jax.data.sources.
                            Corruption`; kinds in `CORRUPTIONS`; default none)

The functions:
  open_dataset / open_from_config   Data(spec, train, test): random-access
                            sources; `train.gather(indices)`,
                            `train.corrupt(indices)`, `len(train)`.
  batch_indices, process_batch_indices, train_batches
                            the run's batch order; this process's batches.
  load_or_create_measurement_sets   fixed train / pristine / corrupt /
                            held-out index sets, saved in the workdir.
  save_corruption           corruption.json (+ .npz for in-memory data).
  load, input_size, check_name, spec, num_classes
                            whole arrays (in-memory datasets) and metadata.
The index corruptions pick exactly round(p·N) examples; `coherence_jax.data.
corrupt_labels` (the reference code's Bernoulli rule) stays for noisy_labels.

Example:
  >>> data = open_dataset('mnist5k', corruption=Corruption('uniform_labels',
  ...                                                       p=0.5, seed=1))
  >>> batch = data.train.gather(batch_indices(seed=0, step=7, batch_size=100,
  ...                                         size=len(data.train)))
  >>> sets = load_or_create_measurement_sets('/tmp/run', data, seed=0,
  ...                                        sample_size=1000,
  ...                                        held_out_size=500)
"""

import dataclasses
import os
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import jax
import numpy as np

from coherence_jax import data as cj_data
from coherence_jax.data import catalog
from coherence_jax.data import corruption as corruption_lib
from coherence_jax.data import measurement
from coherence_jax.data import order
from coherence_jax.data import sources
from coherence_jax.data import tfds_source
from coherence_jax.data.order import batch_indices  # pylint: disable=unused-import
from coherence_jax.data.order import epoch_order  # pylint: disable=unused-import
from coherence_jax.data.sources import Corruption
from experiments.common import files

DATASETS = catalog.NAMES
CORRUPTIONS = corruption_lib.KINDS
NUM_CLASSES = 10  # mnist5k's; other datasets: num_classes(name).
Dataset = Dict[str, Dict[str, np.ndarray]]
MEASUREMENT_SETS = 'measurement_sets.npz'
_LABEL_KINDS = ('permuted_labels', 'uniform_labels', 'random_labels')


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


def corruption_from_config(config) -> Corruption:
  """`Corruption` of config.data.corruption (kind, p, seed); none if absent."""
  entry = config.data.get('corruption', None)
  if entry is None:
    return Corruption()
  kind = entry.get('kind', 'none')
  if kind not in CORRUPTIONS:
    raise ValueError(f'config.data.corruption.kind: got {kind!r}; pass one of '
                     f'{CORRUPTIONS}.')
  try:
    return Corruption(kind, entry.get('p', 1.0), entry.get('seed', 0))
  except ValueError as e:
    raise ValueError(f'config.data.corruption.{e}') from None


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


def open_from_config(config) -> Data:
  """`open_dataset` with the fields of config.data (see the module doc)."""
  d = config.data
  return open_dataset(d.name, data_dir=d.get('data_dir', None),
                      split_seed=d.get('split_seed', 0),
                      corruption=corruption_from_config(config),
                      normalize=d.get('normalize', False),
                      image_size=d.get('image_size', None),
                      num_threads=d.get('num_threads', 16),
                      stream=d.get('stream', False))


def process_batch_indices(seed: int, step: int, batch_size: int,
                          size: int) -> np.ndarray:
  """This process's slice of step `step`'s global batch (jax.process_index()
  of jax.process_count(); batch_size must be a multiple of the count)."""
  return order.process_batch_indices(seed, step, batch_size, size,
                                     jax.process_index(), jax.process_count())


def train_batches(data: Data, *, seed: int, batch_size: int, start_step: int,
                  num_steps: int) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
  """(step, this process's training batch) from start_step on.

  Step s holds `process_batch_indices(seed, s, batch_size, N)`; streamed
  datasets read ahead in parallel. Feed each to
  `jax.make_array_from_process_local_data`.
  """
  return sources.batches(data.train, seed=seed, batch_size=batch_size,
                         start_step=start_step, num_steps=num_steps,
                         process_index=jax.process_index(),
                         process_count=jax.process_count())


def save_corruption(workdir: str, data: Data,
                    writer: Optional[bool] = None) -> Dict[str, object]:
  """Writes the run's corruption: `corruption.json` (kind, p, seed, N and the
  corrupt fraction) and, for in-memory datasets, `corruption.npz` with every
  training example's 'label' (as trained on) and 'corrupt' mask.

  The corruption is a pure function of (seed, index), so these files record
  it rather than define it. A streamed dataset gets the json only (its
  labels would need every example decoded); its fraction is then the exact
  selected fraction round(p·N)/N.

  Returns:
    The json's contents.
  """
  writer = jax.process_index() == 0 if writer is None else writer
  c, n = data.train.corruption, len(data.train)
  meta = {'kind': c.kind, 'p': c.p, 'seed': c.seed, 'num_examples': n,
          'dataset': data.spec.name}
  arrays = None
  if isinstance(data.train.base, sources.ArraySource):
    everything, base = np.arange(n), data.train.base
    labels = base.labels(everything)
    if c.kind in _LABEL_KINDS:  # images are not touched: pass none
      labels = corruption_lib.apply(
          c.kind, {'image': None, 'label': labels}, everything,
          num_examples=n, num_classes=data.spec.num_classes, p=c.p,
          seed=c.seed, labels_of=base.labels)['label']
    arrays = {'label': labels, 'corrupt': data.train.corrupt(everything)}
    meta['corrupt_fraction'] = float(arrays['corrupt'].mean())
  elif c.kind != 'none':
    meta['selected_fraction'] = float(np.floor(c.p * n + 0.5) / n)
  if writer:
    if arrays is not None:
      files.write_npz(os.path.join(workdir, 'corruption.npz'), **arrays)
    files.write_json(os.path.join(workdir, 'corruption.json'), meta)
  return meta


def _corruption_meta(data: Data) -> Dict[str, object]:
  c = data.train.corruption
  return {'dataset': data.spec.name, 'corruption': {
      'kind': c.kind, 'p': c.p, 'seed': c.seed}}


def load_or_create_measurement_sets(workdir: str, data: Data, *, seed: int,
                                    sample_size: int, held_out_size: int,
                                    writer: Optional[bool] = None
                                    ) -> Dict[str, np.ndarray]:
  """The run's fixed measurement sets: read from the workdir, or made once.

  `workdir/measurement_sets.npz` holds {'train', 'pristine', 'corrupt',
  'held_out'} index arrays (`coherence_jax.data.measurement_sets`; pristine
  and corrupt split the train sample by `data.train.corrupt`);
  `measurement_sets.json` the parameters they were made with. A resumed run
  reads them back; one with other parameters is refused.

  Args:
    workdir: the run directory (must exist).
    data: `open_dataset(...)` of the run.
    seed: picks the samples.
    sample_size: training examples in the fixed sample.
    held_out_size: test examples in the held-out sample.
    writer: whether this process writes (default: process 0).

  Returns:
    {'train', 'pristine', 'corrupt', 'held_out'}: int64 index arrays.

  Raises:
    ValueError: the workdir holds sets made with other parameters.
  """
  writer = jax.process_index() == 0 if writer is None else writer
  path = os.path.join(workdir, MEASUREMENT_SETS)
  meta_path = os.path.join(workdir, 'measurement_sets.json')
  meta = {**_corruption_meta(data), 'seed': seed, 'sample_size': sample_size,
          'held_out_size': held_out_size, 'train_size': len(data.train),
          'test_size': len(data.test)}
  if os.path.exists(path) and os.path.exists(meta_path):
    saved = files.read_json(meta_path)
    if saved != meta:
      changed = sorted(k for k in meta if saved.get(k) != meta[k])
      raise ValueError(
          f'{workdir} holds measurement sets made with other {changed}: '
          f'saved {[saved.get(k) for k in changed]}, now '
          f'{[meta[k] for k in changed]}; pass a new --workdir.')
    with np.load(path) as arrays:
      return {name: arrays[name] for name in measurement.SETS}
  sets = cj_data.measurement_sets(
      seed=seed, train_size=len(data.train), test_size=len(data.test),
      sample_size=sample_size, held_out_size=held_out_size,
      is_corrupt=data.train.corrupt)
  if writer:
    files.write_npz(path, **sets)
    files.write_json(meta_path, meta)
  return sets
