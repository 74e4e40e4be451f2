"""The embedded mnist5k split and the label corruption rules."""

import numpy as np
import pytest

from coherence_jax import data


@pytest.fixture(scope='module')
def mnist():
  return data.load_mnist5k(seed=0)


def test_mnist5k_shapes_ranges_and_stratification(mnist):
  train, test = mnist['train'], mnist['test']
  assert train['image'].shape == (4000, 28, 28, 1)
  assert test['image'].shape == (1000, 28, 28, 1)
  assert train['image'].dtype == np.float32 and train['label'].dtype == np.int32
  assert 0.0 <= train['image'].min() and train['image'].max() <= 1.0
  np.testing.assert_array_equal(np.bincount(train['label']), [400] * 10)
  np.testing.assert_array_equal(np.bincount(test['label']), [100] * 10)
  assert len(set(train['label'][:20])) > 3  # shuffled, not sorted by class


def test_mnist5k_split_is_seeded_and_disjoint(mnist):
  again = data.load_mnist5k(seed=0)
  np.testing.assert_array_equal(again['train']['label'], mnist['train']['label'])
  other = data.load_mnist5k(seed=1)
  assert not np.array_equal(other['train']['label'], mnist['train']['label'])
  train_rows = {row.tobytes() for row in mnist['train']['image'][:, ::4, ::4]}
  test_rows = {row.tobytes() for row in mnist['test']['image'][:, ::4, ::4]}
  assert len(train_rows & test_rows) <= 2  # at most near-blank duplicates


def test_random_labels_are_deterministic_and_uniform():
  labels = np.zeros(20_000, np.int32)
  a = data.random_labels(labels, 10, p=1.0, seed=3)
  b = data.random_labels(labels, 10, p=1.0, seed=3)
  np.testing.assert_array_equal(a['label'], b['label'])
  counts = np.bincount(a['label'], minlength=10) / 20_000
  np.testing.assert_allclose(counts, 0.1, atol=0.01)
  np.testing.assert_array_equal(a['corrupt'], a['label'] != 0)


def test_corrupt_labels_permutes_the_picked_set():
  labels = np.arange(10_000, dtype=np.int32) % 10
  out = data.corrupt_labels(labels, p=0.5, seed=0)
  picked = out['selected']
  assert 0.48 < picked.mean() < 0.52
  assert 0.42 < out['corrupt'].mean() < 0.48  # ≈ 0.9 p changed
  np.testing.assert_array_equal(out['label'][~picked], labels[~picked])
  np.testing.assert_array_equal(np.sort(out['label'][picked]),
                                np.sort(labels[picked]))
  np.testing.assert_array_equal(out['corrupt'], out['label'] != labels)


@pytest.mark.parametrize('p', [-0.1, 1.5])
def test_bad_fraction_is_rejected(p):
  with pytest.raises(ValueError, match='p: .*probability'):
    data.corrupt_labels(np.zeros(3, np.int32), p=p)
