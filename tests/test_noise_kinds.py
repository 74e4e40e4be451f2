"""Every noise kind reaches a run from its config (`config.noise.kind`).

The label kinds ('permute', 'uniform') are drawn for the whole set and kept
in corruption.npz; the pixel kinds of `coherence_jax.data.corruption`
('shuffled_pixels', 'random_pixels', 'gaussian_pixels') are a pure function
of (seed, index): the run's examples must be exactly that function's output
(images bit for bit: the same float32 operations on the same inputs), with
round(p·N) examples corrupted and every label kept.
"""

import os

import numpy as np
import pytest

from coherence_jax.data import corruption as corruption_lib
from experiments.common import files
from experiments.common import supervised
from experiments.noisy_labels.configs import tiny


@pytest.fixture(scope='module')
def setup():
  config = tiny.get_config()
  config.mesh.data = 1
  return supervised.setup(config)


@pytest.mark.parametrize('kind', supervised.PIXEL_KINDS)
def test_pixel_kinds_corrupt_exactly_the_picked_images(setup, tmp_path, kind):
  s = setup
  train = supervised.load_noise(str(tmp_path), s, kind, p=0.25, seed=3)
  clean_images, clean_labels = s.split_arrays('train')
  n = s.train_size
  assert int(train.corrupt.sum()) == round(0.25 * n)
  np.testing.assert_array_equal(train.labels, clean_labels)
  untouched = ~train.corrupt
  np.testing.assert_array_equal(train.images[untouched],
                                clean_images[untouched])
  picked = np.flatnonzero(train.corrupt)[:5]
  expected = corruption_lib.apply(
      kind, {'image': clean_images[picked], 'label': clean_labels[picked]},
      picked, num_examples=n, num_classes=s.num_classes, p=0.25, seed=3,
      mean=s.data.train.mean, std=s.data.train.std)
  np.testing.assert_array_equal(train.images[picked], expected['image'])
  assert not np.array_equal(train.images[picked], clean_images[picked])
  meta = files.read_json(os.path.join(tmp_path, 'corruption.json'))
  assert (meta['kind'], meta['p'], meta['seed']) == (kind, 0.25, 3)
  assert not os.path.exists(os.path.join(tmp_path, 'corruption.npz'))
  with pytest.raises(ValueError, match=r'config.noise: got .*pass a new'):
    supervised.load_noise(str(tmp_path), s, kind, p=0.5, seed=3)


@pytest.mark.parametrize('kind', supervised.LABEL_KINDS)
def test_label_kinds_keep_the_images_and_save_the_labels(setup, tmp_path,
                                                        kind):
  s = setup
  train = supervised.load_noise(str(tmp_path), s, kind, p=0.5, seed=1)
  clean_images, clean_labels = s.split_arrays('train')
  np.testing.assert_array_equal(train.images, clean_images)
  np.testing.assert_array_equal(train.corrupt, train.labels != clean_labels)
  assert 0.3 < train.corrupt.mean() < 0.5   # ≈ 0.9 p changed
  with np.load(os.path.join(tmp_path, 'corruption.npz')) as saved:
    np.testing.assert_array_equal(saved['label'], train.labels)


def test_an_unknown_kind_is_named_with_the_valid_ones():
  config = tiny.get_config()
  config.noise.kind = 'salt_and_pepper'
  with pytest.raises(ValueError, match=r"config.noise.kind: got "
                     r"'salt_and_pepper'; pass one of \('permute', 'uniform', "
                     r"'shuffled_pixels'"):
    supervised.setup(config)
