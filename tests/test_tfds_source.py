"""tfds data_source + grain pipeline, on tfds mock data (never downloads)."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from coherence_jax.data import tfds_source


@pytest.fixture
def mock_mnist():
  with tfds.testing.mock_data(num_examples=40):
    yield tfds_source.data_source('mnist', 'train')


def test_batches_are_normalised_and_shaped(mock_mnist):
  batches = list(tfds_source.train_batches(mock_mnist, batch_size=16, seed=0))
  assert len(batches) == 2  # 40 examples, remainder dropped
  batch = batches[0]
  assert batch['image'].shape == (16, 28, 28, 1)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0


def test_epochs_reshuffle_and_seed_is_deterministic(mock_mnist):
  def labels(seed):
    return np.concatenate([b['label'] for b in tfds_source.train_batches(
        mock_mnist, batch_size=8, seed=seed, num_epochs=2)])
  first, again = labels(0), labels(0)
  np.testing.assert_array_equal(first, again)
  assert len(first) == 80
  all_images = tfds_source.load_arrays(mock_mnist)
  assert all_images['image'].shape == (40, 28, 28, 1)


def test_host_shards_partition_the_data(mock_mnist):
  # Example ids are image bytes: the same example, normalised by the same numpy
  # code, is bit-identical on every shard.
  ids = []
  for index in range(4):
    shard = tfds_source.train_batches(mock_mnist, batch_size=1, seed=0,
                                      shard_index=index, shard_count=4)
    ids.append({b['image'].tobytes() for b in shard})
  assert sum(len(s) for s in ids) == 40
  assert not set.intersection(*ids)


@pytest.fixture
def no_download(monkeypatch):
  """Any attempt to download or prepare a dataset fails the test."""
  def forbidden(*args, **kwargs):
    raise AssertionError('the test tried to download a dataset')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      forbidden)


def test_unprepared_dataset_fails_fast_with_instructions(tmp_path, no_download):
  start = time.perf_counter()
  with pytest.raises(ValueError) as info:
    tfds_source.data_source('mnist', 'train', data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10.0
  message = str(info.value)
  assert "'mnist'" in message and 'is not prepared' in message
  assert f'data_dir={str(tmp_path)!r}' in message
  assert 'tfds build mnist --data_dir=DIR' in message
  assert not list(tmp_path.iterdir())  # nothing downloaded or written


def test_unprepared_dataset_under_the_default_data_dir(no_download):
  # conftest points TFDS_DATA_DIR at a directory that does not exist.
  with pytest.raises(ValueError, match=r"'cifar10'.*is not prepared under "
                     r'data_dir=None \(looked in /nonexistent'):
    tfds_source.data_source('cifar10', 'test')


def test_unknown_name_is_not_a_tfds_dataset(no_download):
  with pytest.raises(ValueError) as info:
    tfds_source.data_source('definitely_not_a_dataset', 'train')
  message = str(info.value)
  assert "'definitely_not_a_dataset' is not a tfds dataset" in message
  assert 'tfds build' not in message


def test_misspelt_name_lists_close_names(no_download):
  with pytest.raises(ValueError, match=r"'mnst' is not a tfds dataset "
                     r'\(close names: mnist'):
    tfds_source.data_source('mnst', 'train')


def test_load_arrays_takes_chosen_examples(mock_mnist):
  picked = tfds_source.load_arrays(mock_mnist, np.array([3, 0, 39]))
  everything = tfds_source.load_arrays(mock_mnist)
  # The same numpy normalisation (uint8 / 255, correctly rounded, elementwise)
  # of the same examples: bit-identical, so exact.
  np.testing.assert_array_equal(picked['image'],
                                everything['image'][[3, 0, 39]])
  np.testing.assert_array_equal(picked['label'],
                                everything['label'][[3, 0, 39]])


@pytest.mark.parametrize('index', [40, 1000, -1, -40])
def test_load_arrays_rejects_out_of_range_indices(mock_mnist, index):
  with pytest.raises(IndexError, match=rf'index {index} is out of range for '
                     r'a dataset of length 40'):
    tfds_source.load_arrays(mock_mnist, np.array([0, index]))


@pytest.mark.parametrize('indices', [np.array([0.0, 1.5]),
                                     np.zeros((2, 2), np.int32)])
def test_load_arrays_rejects_non_integer_or_nested_indices(mock_mnist, indices):
  with pytest.raises(ValueError, match=r'indices: .*integer indices of shape'):
    tfds_source.load_arrays(mock_mnist, indices)


def test_split_is_required():
  with pytest.raises(ValueError, match='split'):
    tfds_source.data_source('mnist', '')
