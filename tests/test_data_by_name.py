"""Datasets by name through tfds data_source + grain, under tfds mock data
(never a download); corruption, batch order, sharding, resumption, and the
measurement sets of an opened dataset."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from coherence_jax.data import catalog
from coherence_jax.data import measurement
from coherence_jax.data import order
from coherence_jax.data import sources
from experiments.common import data

MOCK = 48  # examples per split under the mock


@pytest.fixture
def no_download(monkeypatch):
  """Any attempt to download or prepare a dataset fails the test."""
  def forbidden(*args, **kwargs):
    raise AssertionError('the test tried to download a dataset')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      forbidden)


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist', 'cifar10',
                                  'cifar100'])
def test_in_memory_datasets_by_name(name):
  spec = catalog.spec(name)
  with tfds.testing.mock_data(num_examples=MOCK):
    opened = data.open_dataset(name)
    arrays = data.load(name)
  assert (len(opened.train), len(opened.test)) == (MOCK, MOCK)
  assert isinstance(opened.train.base, sources.ArraySource)  # in memory
  batch = opened.train.gather(np.array([5, 0, 47]))
  assert batch['image'].shape == (3,) + spec.image_shape
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert 0 <= batch['label'].min() and batch['label'].max() < spec.num_classes
  # `load` gives the same examples as arrays (uint8 / 255 both ways: exact).
  np.testing.assert_array_equal(arrays['train']['image'][[5, 0, 47]],
                                batch['image'])
  np.testing.assert_array_equal(arrays['test']['label'],
                                opened.test.gather(np.arange(MOCK))['label'])


def test_specs_expose_shapes_classes_and_statistics():
  assert data.DATASETS == ('mnist5k', 'mnist', 'fashion_mnist', 'cifar10',
                           'cifar100', 'imagenet2012')
  for name in data.DATASETS:
    spec = catalog.spec(name)
    assert len(spec.mean) == len(spec.std) == spec.image_shape[-1]
    assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1
                                                     for s in spec.std)
  assert data.num_classes('cifar100') == 100
  assert data.num_classes('imagenet2012') == 1000


def test_normalization_uses_the_dataset_mean_and_std():
  with tfds.testing.mock_data(num_examples=MOCK):
    raw = data.open_dataset('cifar10').train.gather(np.arange(4))
    normed = data.open_dataset('cifar10', normalize=True).train.gather(
        np.arange(4))
  mean, std = np.array(catalog.spec('cifar10').mean), np.array(
      catalog.spec('cifar10').std)
  # One float32 subtraction and division per value: ~2 ulps.
  np.testing.assert_allclose(normed['image'], (raw['image'] - mean) / std,
                             rtol=1e-6, atol=1e-6)


def test_imagenet_streams_resized_and_center_cropped():
  with tfds.testing.mock_data(num_examples=MOCK):
    opened = data.open_dataset('imagenet2012', image_size=16, num_threads=4)
    raw = tfds.data_source('imagenet2012', split='train')[3]['image']
  assert isinstance(opened.train.base, sources.StreamingSource)
  assert opened.spec.image_shape == (16, 16, 3)
  assert raw.shape[:2] != (16, 16)  # mock images have random sizes
  batch = opened.train.gather(np.array([3, 1]))
  assert batch['image'].shape == (2, 16, 16, 3)
  assert batch['label'].max() < 1000
  # Shorter side to round(16 * 256 / 224) = 18, then the central 16 x 16.
  want = sources.preprocess.resize_center_crop(raw, 16, 18)
  np.testing.assert_array_equal(batch['image'][0], want / np.float32(255))


def test_streamed_batches_equal_gathered_batches_and_resume_exactly():
  """The grain pipeline (parallel reads) yields step s's batch_indices, for
  each process its slice; starting at step 3 gives steps 3.. unchanged."""
  corruption = data.Corruption('permuted_labels', p=0.5, seed=2)
  with tfds.testing.mock_data(num_examples=MOCK):
    opened = data.open_dataset('imagenet2012', image_size=8, num_threads=4,
                               corruption=corruption)
    whole = list(sources.batches(opened.train, seed=1, batch_size=8,
                                 num_steps=5))
    resumed = list(sources.batches(opened.train, seed=1, batch_size=8,
                                   start_step=3, num_steps=2))
    halves = [list(sources.batches(opened.train, seed=1, batch_size=8,
                                   num_steps=5, process_index=i,
                                   process_count=2)) for i in (0, 1)]
    for step, batch in whole:
      want = opened.train.gather(order.batch_indices(1, step, 8, MOCK))
      for key in ('image', 'label'):
        np.testing.assert_array_equal(batch[key], want[key])
        np.testing.assert_array_equal(
            np.concatenate([halves[0][step][1][key], halves[1][step][1][key]]),
            want[key])
  assert [s for s, _ in resumed] == [3, 4]
  for (_, a), (_, b) in zip(resumed, whole[3:]):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_corruption_through_the_source_is_per_index():
  corruption = data.Corruption('uniform_labels', p=0.5, seed=0)
  with tfds.testing.mock_data(num_examples=MOCK):
    opened = data.open_dataset('mnist', corruption=corruption)
    clean = data.open_dataset('mnist')
  everything = opened.train.gather(np.arange(MOCK))['label']
  one_by_one = np.array([opened.train[i]['label'] for i in range(MOCK)])
  np.testing.assert_array_equal(one_by_one, everything)
  clean_labels = clean.train.gather(np.arange(MOCK))['label']
  mask = opened.train.corrupt(np.arange(MOCK))
  np.testing.assert_array_equal(mask, everything != clean_labels)
  np.testing.assert_array_equal(  # the test split stays clean
      opened.test.gather(np.arange(MOCK))['label'],
      clean.test.gather(np.arange(MOCK))['label'])


def test_measurement_sets_split_the_sample_by_the_corrupt_mask():
  corruption = data.Corruption('random_labels', seed=3)
  opened = data.open_dataset('mnist5k', corruption=corruption)
  kwargs = dict(seed=0, train_size=len(opened.train),
                test_size=len(opened.test), sample_size=200, held_out_size=50,
                is_corrupt=opened.train.corrupt)
  sets = measurement.measurement_sets(**kwargs)
  assert len(sets['train']) == 200 and len(sets['held_out']) == 50
  assert sets['held_out'].max() < len(opened.test)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([sets['pristine'], sets['corrupt']])),
      sets['train'])
  assert opened.train.corrupt(sets['corrupt']).all()
  assert not opened.train.corrupt(sets['pristine']).any()
  # ~90 % of random labels differ from the true one (10 classes).
  assert 0.8 < len(sets['corrupt']) / 200 < 0.97
  again = measurement.measurement_sets(**kwargs)  # a resumed run: the same
  for name in sets:
    np.testing.assert_array_equal(again[name], sets[name])


def test_mnist5k_by_name_is_the_embedded_split():
  opened = data.open_dataset('mnist5k', split_seed=0)
  arrays = data.load('mnist5k', 0)
  np.testing.assert_array_equal(opened.train.gather(np.arange(10))['image'],
                                arrays['train']['image'][:10])
  assert len(opened.train) == 4000 and len(opened.test) == 1000


def test_batch_order_is_unchanged():
  """The order the existing experiments (and their README numbers) used."""
  size, batch = 4000, 100
  for step in (0, 39, 40, 1234):
    epoch, within = divmod(step, size // batch)
    want = np.random.default_rng([0, epoch]).permutation(size)[
        within * batch:(within + 1) * batch]
    np.testing.assert_array_equal(data.batch_indices(0, step, batch, size),
                                  want)


@pytest.mark.parametrize('name', ['cifar10', 'imagenet2012'])
def test_unprepared_dataset_fails_fast_and_says_how_to_prepare_it(
    tmp_path, no_download, name):
  start = time.perf_counter()
  with pytest.raises(ValueError) as info:
    data.open_dataset(name, data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10.0
  message = str(info.value)
  assert f"dataset {name!r}" in message and 'is not prepared' in message
  assert f'data_dir={str(tmp_path)!r}' in message
  assert f'tfds build {name} --data_dir=DIR' in message
  if name == 'imagenet2012':
    assert "manual_dir" in message and '--manual_dir=' in message
    assert 'ILSVRC2012_img_train.tar' in message
  assert not list(tmp_path.iterdir())  # nothing downloaded or written


def test_unknown_dataset_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"config.data.name: got 'svhn'; pass "
                     r"one of \('mnist5k', 'mnist', 'fashion_mnist', "
                     r"'cifar10', 'cifar100', 'imagenet2012'\)"):
    data.open_dataset('svhn')


def test_streamed_dataset_is_not_loaded_whole():
  with pytest.raises(ValueError, match=r"'imagenet2012' is streamed"):
    data.load('imagenet2012')


def test_index_corruption_of_an_opened_dataset_is_exact():
  """Pixel kinds pick exactly round(p·N) examples and leave the rest (and
  every label) as they were."""
  opened = data.open_dataset('mnist5k', corruption=data.Corruption(
      'shuffled_pixels', p=0.25, seed=1))
  clean = data.open_dataset('mnist5k').train.gather(np.arange(4000))
  everything = opened.train.gather(np.arange(4000))
  mask = opened.train.corrupt(np.arange(4000))
  assert mask.sum() == 1000
  np.testing.assert_array_equal(everything['label'], clean['label'])
  np.testing.assert_array_equal(everything['image'][~mask],
                                clean['image'][~mask])
  assert all(not np.array_equal(a, b) for a, b in zip(
      everything['image'][mask][:20], clean['image'][mask][:20]))


@pytest.mark.parametrize('fields,match', [
    ({'kind': 'blur'}, r"kind: got 'blur'; pass one of \('none'"),
    ({'kind': 'uniform_labels', 'p': 1.5}, r'p: got 1.5'),
    ({'kind': 'random_labels', 'p': 0.5},
     r"p: got 0.5 for kind 'random_labels'"),
    ({'kind': 'none', 'seed': -1}, r'seed: got -1'),
])
def test_bad_corruption_fields_are_named(fields, match):
  with pytest.raises(ValueError, match=match):
    data.Corruption(**fields)
