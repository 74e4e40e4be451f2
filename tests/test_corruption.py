"""Index-based corruption: pure in (seed, index), exact fractions, each rule's
definition checked against a direct numpy statement of it."""

import numpy as np
import pytest

from coherence_jax.data import corruption

N = 1000


def _labels(n=N, num_classes=10):
  return (np.arange(n) * 7 % num_classes).astype(np.int32)


def _position_images(k, h=4, w=5, c=3):
  """Pixel (y, x, ch) of image i holds i*1000 + (y*w + x)*10 + ch: every value
  names its image, position and channel."""
  i = np.arange(k)[:, None, None, None] * 1000
  pos = (np.arange(h)[:, None] * w + np.arange(w)[None, :])[None, :, :, None]
  return (i + pos * 10 + np.arange(c)).astype(np.float32)


@pytest.mark.parametrize('n,p', [(1000, 0.25), (999, 0.5), (7, 1 / 3), (10, 0.0),
                                 (10, 1.0), (1, 0.5)])
def test_select_picks_exactly_round_p_n(n, p):
  picked = corruption.select(np.arange(n), num_examples=n, p=p, seed=4)
  assert picked.sum() == int(np.floor(p * n + 0.5))


def test_same_seed_same_result_other_seed_other_result():
  labels = _labels()
  idx = np.arange(N)
  kwargs = dict(num_examples=N, num_classes=10, p=0.5)
  a = corruption.uniform_labels(labels, idx, seed=1, **kwargs)
  b = corruption.uniform_labels(labels, idx, seed=1, **kwargs)
  c = corruption.uniform_labels(labels, idx, seed=2, **kwargs)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['selected'], c['selected'])


def _in_chunks(fn, indices, chunk=37):
  """fn over `indices` in shuffled chunks, reassembled in index order."""
  order = np.random.default_rng(0).permutation(indices)
  parts = {}
  for start in range(0, order.size, chunk):
    part = order[start:start + chunk]
    out = fn(part)
    for j, i in enumerate(part):
      parts[int(i)] = {key: value[j] for key, value in out.items()}
  return {key: np.stack([parts[int(i)][key] for i in indices])
          for key in next(iter(parts.values()))}


@pytest.mark.parametrize('kind', ['uniform_labels', 'permuted_labels',
                                  'shuffled_pixels', 'random_pixels',
                                  'gaussian_pixels'])
def test_result_does_not_depend_on_which_indices_are_asked(kind):
  n = 200
  labels = _labels(n)
  images = _position_images(n, 3, 3, 1)

  def run(indices):
    return corruption.apply(
        kind, {'image': images[indices], 'label': labels[indices]}, indices,
        num_examples=n, num_classes=10, p=0.5, seed=3, mean=[0.5], std=[0.2],
        labels_of=lambda i: labels[i])

  whole = run(np.arange(n))
  chunked = _in_chunks(run, np.arange(n))
  for key in whole:  # the same draws and IEEE arithmetic: bit-identical.
    np.testing.assert_array_equal(chunked[key], whole[key])
  assert 0 < whole['corrupt'].sum() <= n // 2


def test_permuted_labels_permute_exactly_the_picked_fraction():
  labels = _labels()
  out = corruption.permuted_labels(labels, p=0.3, seed=0)
  picked = out['selected']
  assert picked.sum() == 300
  np.testing.assert_array_equal(out['label'][~picked], labels[~picked])
  np.testing.assert_array_equal(np.sort(out['label'][picked]),
                                np.sort(labels[picked]))
  np.testing.assert_array_equal(out['corrupt'], out['label'] != labels)
  # A random permutation of 300 labels over 10 balanced classes changes
  # ~90 % of them (binomial sd ~2 %).
  assert 0.8 < out['corrupt'][picked].mean() < 0.97
  sources = corruption.permutation_sources(np.arange(N), num_examples=N,
                                           p=0.3, seed=0)
  np.testing.assert_array_equal(labels[sources], out['label'])
  np.testing.assert_array_equal(np.sort(sources[picked]),
                                np.flatnonzero(picked))


def test_uniform_labels_relabel_the_picked_fraction_uniformly():
  n, classes = 20_000, 10
  labels = np.zeros(n, np.int32)
  out = corruption.uniform_labels(labels, np.arange(n), num_examples=n,
                                  num_classes=classes, p=0.5, seed=0)
  picked = out['selected']
  assert picked.sum() == n // 2
  np.testing.assert_array_equal(out['label'][~picked], 0)
  counts = np.bincount(out['label'][picked], minlength=classes) / picked.sum()
  # Sampling: the binomial standard error of a class share over 10,000 draws
  # is 0.003, so 0.015 is 5 sigma; a missing or doubled class is far out.
  np.testing.assert_allclose(counts, 1 / classes, atol=0.015)
  np.testing.assert_array_equal(out['corrupt'], out['label'] != labels)


def test_random_labels_are_uniform_labels_at_p_one():
  labels = _labels(50)
  batch = {'image': np.zeros((50, 1, 1, 1)), 'label': labels}
  out = corruption.apply('random_labels', batch, np.arange(50),
                         num_examples=50, num_classes=10, p=1.0, seed=5)
  want = corruption.uniform_labels(labels, np.arange(50), num_examples=50,
                                   num_classes=10, p=1.0, seed=5)
  np.testing.assert_array_equal(out['label'], want['label'])
  assert want['selected'].all()
  with pytest.raises(ValueError, match=r"p: got 0.5 .*'uniform_labels'"):
    corruption.apply('random_labels', batch, np.arange(50), num_examples=50,
                     num_classes=10, p=0.5, seed=5)


def test_shuffled_pixels_use_one_permutation_for_all_images():
  images = _position_images(6)
  out = corruption.shuffled_pixels(images, np.arange(6), num_examples=6,
                                   seed=0)
  assert out['corrupt'].all()
  # Each output pixel holds one input pixel with its channels together.
  flat = out['image'].reshape(6, 20, 3)
  position = (flat % 1000) // 10
  np.testing.assert_array_equal(position[..., 0], position[..., 2])
  np.testing.assert_array_equal(flat % 10, np.broadcast_to(np.arange(3),
                                                           flat.shape))
  np.testing.assert_array_equal(
      flat // 1000, np.broadcast_to(np.arange(6)[:, None, None], flat.shape))
  perm = position[0, :, 0]
  np.testing.assert_array_equal(np.sort(perm), np.arange(20))
  assert not np.array_equal(perm, np.arange(20))
  np.testing.assert_array_equal(position[..., 0],
                                np.broadcast_to(perm, (6, 20)))


def test_random_pixels_use_one_permutation_per_image():
  images = _position_images(6)
  out = corruption.shuffled_pixels(images, np.arange(6), num_examples=6,
                                   seed=0, per_image=True)
  position = ((out['image'].reshape(6, 20, 3) % 1000) // 10)[..., 0]
  for row in position:
    np.testing.assert_array_equal(np.sort(row), np.arange(20))
  assert len({row.tobytes() for row in position}) == 6


def test_pixel_corruption_of_a_fraction_leaves_the_rest():
  images = _position_images(10)
  out = corruption.shuffled_pixels(images, np.arange(10), num_examples=10,
                                   seed=1, p=0.3)
  assert out['corrupt'].sum() == 3
  np.testing.assert_array_equal(out['image'][~out['corrupt']],
                                images[~out['corrupt']])
  assert not np.array_equal(out['image'][out['corrupt']],
                            images[out['corrupt']])


def test_gaussian_pixels_have_the_data_mean_and_std():
  k, mean, std = 64, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
  out = corruption.gaussian_pixels(np.zeros((k, 16, 16, 3)), np.arange(k),
                                   num_examples=k, seed=0, mean=mean, std=std)
  values = out['image'].reshape(-1, 3)
  assert out['image'].dtype == np.float32 and out['corrupt'].all()
  # 16,384 draws per channel: the sample mean's standard error is std/128
  # (0.002) and the sample std's is std/181; 5 sigma.
  np.testing.assert_allclose(values.mean(0), mean, atol=0.01)
  np.testing.assert_allclose(values.std(0), std, rtol=0.03)
  # Normal, not uniform: ~68.3 % within one std (binomial sd 0.4 %).
  within = np.abs((values - mean) / std) < 1
  assert abs(within.mean() - 0.6827) < 0.01


def test_unknown_kind_lists_the_kinds():
  with pytest.raises(ValueError, match=r"kind: got 'noise'; pass one of "
                     r"\('none', 'permuted_labels'"):
    corruption.apply('noise', {'image': None, 'label': np.zeros(1)},
                     np.arange(1), num_examples=1, num_classes=2, p=1.0,
                     seed=0)


@pytest.mark.parametrize('indices', [np.array([0, 10]), np.array([-1]),
                                     np.array([0.5])])
def test_indices_outside_the_set_are_rejected(indices):
  with pytest.raises(ValueError, match='indices: '):
    corruption.select(indices, num_examples=10, p=0.5, seed=0)
