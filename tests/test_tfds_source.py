"""tfds data_source + grain pipeline, on tfds mock data (never downloads)."""

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
  ids = []
  for index in range(4):
    shard = tfds_source.train_batches(mock_mnist, batch_size=1, seed=0,
                                      shard_index=index, shard_count=4)
    ids.append({b['image'].tobytes() for b in shard})
  assert sum(len(s) for s in ids) == 40
  assert not set.intersection(*ids)


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
  with pytest.raises(ValueError, match=r'not readable under data_dir=.*tfds build'):
    tfds_source.data_source('mnist', 'train', data_dir=str(tmp_path))


def test_split_is_required():
  with pytest.raises(ValueError, match='split'):
    tfds_source.data_source('mnist', '')
