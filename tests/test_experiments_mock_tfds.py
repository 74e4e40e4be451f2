"""Every experiment end to end at tiny size on tfds datasets by name, under
`tfds.testing.mock_data`: the numbers each writes, in memory
(mnist, cifar10) and streamed (imagenet2012, or mnist with
config.data.stream=True: read per example by index, the noise a per-index
rule with an exact fraction); streamed and in-memory runs agree; a streamed
run resumes exactly.

The mock is active before any tfds builder is touched (the fixture wraps the
whole test), config.data.data_dir is an empty tmp path, TFDS_DATA_DIR points
nowhere (conftest) and downloading or preparing a dataset fails the test.
Mock examples are random images with random labels, the same for every
split; the checks are of consistency, not of learning.
"""

import math
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from coherence_jax.data import corruption as corruption_lib
from experiments.common import data
from experiments.common import examples
from experiments.common import files
from experiments.common import nets
from experiments.common import supervised
from experiments.coherence_evolution import train as coh_train
from experiments.coherence_evolution.configs import tiny as coh_tiny
from experiments.easy_hard import train as eh_train
from experiments.easy_hard.configs import tiny as eh_tiny
from experiments.learning_order import train as lo_train
from experiments.learning_order.configs import tiny as lo_tiny
from experiments.noisy_labels import train as nl_train
from experiments.noisy_labels.configs import tiny as nl_tiny
from experiments.noisy_median import train as nm_train
from experiments.noisy_median.configs import default as nm_default
from experiments.real_vs_random import train as rvr_train
from experiments.real_vs_random.configs import resnet50_imagenet as rvr_resnet50
from experiments.stability_bound import train as sb_train
from experiments.stability_bound.configs import tiny as sb_tiny

MOCK = 48  # examples per split


@pytest.fixture
def mock_tfds(tmp_path, monkeypatch):
  """tfds mock data for the whole test; returns an empty data_dir."""
  def forbidden(*args, **kwargs):
    raise AssertionError('the test tried to download or prepare a dataset')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      forbidden)
  data_dir = tmp_path / 'tfds'
  with tfds.testing.mock_data(num_examples=MOCK):
    yield str(data_dir)
  assert not data_dir.exists()  # nothing written there, nothing downloaded


def _data(config, name, data_dir, stream=False, **fields):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config.data = ml_collections.ConfigDict(dict(
      name=name, split_seed=0, data_dir=data_dir, stream=stream, **fields))
  return config


def _rows(path):
  return files.read_rows(os.path.join(path, 'metrics.jsonl'))


def _in_unit(x):
  return 0.0 <= x <= 1.0


def _exact_corrupt(name, kind, p, seed, data_dir, n=MOCK):
  """The corrupt mask of the per-index rule, computed apart from the run."""
  opened = data.open_dataset(name, data_dir=data_dir, stream=True,
                             corruption=data.Corruption(kind, p, seed))
  return opened.train.corrupt(np.arange(n))


# ------------------------------------------------ default tier: one cheap case
def _pieces(data_dir):
  """A tiny net on 8 devices, mock mnist held and streamed, 11 indices."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  net = nets.make(ml_collections.ConfigDict(dict(name='mlp',
                                                 widths=(784, 4, 10))),
                  (28, 28, 1), 10, seed=0)
  mesh = supervised.distributed.make_mesh(-1)
  state = {'params': supervised.distributed.replicate(net.params, mesh)}
  everything = data.open_dataset('mnist', data_dir=data_dir).train.gather(
      np.arange(MOCK))
  held = examples.InMemory(everything['image'], everything['label'])
  read = examples.Streamed(data.open_dataset('mnist', data_dir=data_dir,
                                             stream=True).train)
  idx = np.array([3, 0, 47, 5, 9, 11, 2, 30, 31, 40, 41])  # 11: one padded
  return net, mesh, state, held, read, idx


def test_streamed_evaluation_equals_in_memory(mock_tfds):
  """Per-example scores read by index in chunks sharded over 8 devices (the
  last chunk padded) against the in-memory evaluation, on mock mnist."""
  net, mesh, state, held, read, idx = _pieces(mock_tfds)
  want = examples.Evaluator(net, held, idx, mesh=mesh).at(state, 0)
  evaluator = examples.Evaluator(net, read, idx, mesh=mesh, chunk_size=8)
  got = evaluator.at(state, 0)
  np.testing.assert_array_equal(got[0], want[0])
  # Per-example losses of the same params: float32 rounding of two programs.
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
  assert evaluator.at(state, 0) is got  # once per step
  assert not evaluator.corrupt.any() and evaluator.corrupt.shape == (11,)


@pytest.mark.slow
def test_streamed_coherence_merges_chunks(mock_tfds):
  net, mesh, state, held, read, idx = _pieces(mock_tfds)
  whole = supervised.sharding.sharded_coherence_stats(
      net.loss_fn, state['params'], held.gather(idx), mesh,
      microbatch_size=4)
  merged = examples.coherence_stats(
      net.loss_fn, state['params'], examples.Sample(read, idx), mesh,
      microbatch_size=4, chunk_size=8)  # chunks of 8 and 3
  assert int(merged.count) == 11
  # Sums of 11 float32 per-example gradients in two orders: ~1e-6 relative.
  assert float(merged.m_coherence()) == pytest.approx(
      float(whole.m_coherence()), rel=1e-4)


# ----------------------------------------------------- each experiment: slow
@pytest.mark.slow
def test_real_vs_random_on_streamed_imagenet(mock_tfds, tmp_path):
  config = rvr_resnet50.get_config()  # the full-size config, tiny
  _data(config, 'imagenet2012', mock_tfds, image_size=8, num_threads=4)
  config.model.name = 'cnn'
  config.train.batch_size = 16  # 3 steps per epoch, 2 per device
  config.train.epochs = 2
  config.measure.update(dict(sample_size=12, microbatch_size=2, eval_size=16,
                             test_eval_size=8, chunk_size=8, growth=2.0))
  workdir = str(tmp_path / 'rvr')
  summary = rvr_train.train_and_evaluate(config, workdir)
  want_steps = [0, 2, 4, 6]  # dense_until=0, then 2x apart
  for mode in ('real', 'random'):
    rows = _rows(os.path.join(workdir, mode))
    assert [r['step'] for r in rows] == want_steps
    for r in rows:
      assert math.isfinite(r['m_coherence'])
      assert 0 < r['m_coherence'] <= 12 * (1 + 1e-5)
      assert _in_unit(r['train_accuracy']) and _in_unit(r['test_accuracy'])
      assert r['train_accuracy'] * 16 == pytest.approx(
          round(r['train_accuracy'] * 16), abs=1e-9)  # of 16 examples
      assert len(r['modules']) >= 3 and all(
          math.isfinite(v) for v in r['modules'].values())
    assert summary[mode] == rvr_train.report.summarize(rows, 0)
  labels = files.read_json(os.path.join(workdir, 'random', 'labels.json'))
  assert labels == {'mode': 'random', 'rule': 'uniform_labels', 'p': 1.0,
                    'seed': 1}
  assert os.path.exists(os.path.join(workdir, 'table.md'))


@pytest.mark.slow
def test_coherence_evolution_streamed_equals_in_memory(mock_tfds, tmp_path):
  """Noise 0: the same run streamed and in memory; noise 0.5 streamed: the
  per-index uniform rule, exactly round(p N) examples relabelled."""

  def config(stream, levels):
    c = _data(coh_tiny.get_config(), 'mnist', mock_tfds, stream=stream)
    c.noise.levels = levels
    c.model.widths = (784, 8, 10)
    c.train.update(dict(batch_size=16, epochs=2, checkpoint_every_epochs=1))
    c.measure.update(dict(sample_size=12, microbatch_size=4, dense_until=2,
                          growth=2.0, chunk_size=8))
    return c

  memory = str(tmp_path / 'memory')
  coh_train.train_and_evaluate(config(False, (0.0,)), memory)
  streamed = str(tmp_path / 'streamed')
  summary = coh_train.train_and_evaluate(config(True, (0.0, 0.5)), streamed)
  want = _rows(os.path.join(memory, 'noise_0.00'))
  got = _rows(os.path.join(streamed, 'noise_0.00'))
  assert [r['step'] for r in got] == [0, 1, 2, 4, 6]  # dense_until=2, 2x
  for a, b in zip(got, want):
    for key in ('train_accuracy', 'test_accuracy', 'pristine_accuracy'):
      assert a[key] == b[key]
    # Coherence sums merged over chunks of 8: float32 order, ~1e-6.
    assert a['m_coherence'] == pytest.approx(b['m_coherence'], rel=1e-4)
    assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-5)
  run = os.path.join(streamed, 'noise_0.50')
  meta = files.read_json(os.path.join(run, 'corruption.json'))
  assert meta['rule'] == 'uniform_labels'
  assert meta['selected_fraction'] == 24 / MOCK  # exactly round(p N) / N
  corrupt = _exact_corrupt('mnist', 'uniform_labels', 0.5, 1, mock_tfds)
  assert summary['noise_0.50']['corrupt_fraction'] == corrupt.mean()
  assert 0 < corrupt.sum() <= 24
  with np.load(os.path.join(run, supervised.FIXED_SAMPLES)) as sets:
    np.testing.assert_array_equal(sets['coherence'],
                                  supervised.fixed_sample(0, MOCK, 12))
  for r in _rows(run):
    assert math.isfinite(r['m_coherence']) and r['m_coherence'] > 0
    assert all(_in_unit(r[k]) for k in ('train_accuracy', 'test_accuracy',
                                         'pristine_accuracy',
                                         'corrupt_accuracy'))


@pytest.mark.slow
def test_learning_order_streamed_records_and_exact_resume(mock_tfds,
                                                          tmp_path):
  """Records of every example from a streamed pass; a run crashed mid-way
  resumes (its batches read again from the crash step) to the same rows."""

  def config():
    c = _data(lo_tiny.get_config(), 'cifar10', mock_tfds, stream=True)
    c.model.widths = (3072, 8, 10)
    c.train.update(dict(batch_size=16, epochs=4, checkpoint_every_epochs=1))
    c.measure.every_steps = 2
    c.measure.chunk_size = 16
    return c

  whole = str(tmp_path / 'whole')
  summary = lo_train.train_and_evaluate(config(), whole)
  run = os.path.join(whole, 'noise_0.50')
  rows = _rows(run)
  assert [r['step'] for r in rows] == list(range(0, 13, 2))
  with np.load(os.path.join(run, 'records.npz')) as r:
    learnt = r['learnt_step']
  assert learnt.shape == (MOCK,)
  assert np.mean(learnt >= 0) == pytest.approx(rows[-1]['train_accuracy'],
                                               abs=1e-12)
  meta = files.read_json(os.path.join(run, 'corruption.json'))
  assert meta['rule'] == 'permuted_labels'
  assert meta['selected_fraction'] == 24 / MOCK
  selected = corruption_lib.select(np.arange(MOCK), num_examples=MOCK, p=0.5,
                                   seed=1)
  assert selected.sum() == 24
  corrupt = _exact_corrupt('cifar10', 'permuted_labels', 0.5, 1, mock_tfds)
  assert not corrupt[~selected].any()  # only picked examples change label
  assert np.mean(learnt[corrupt] >= 0) == pytest.approx(
      rows[-1]['corrupt_accuracy'], abs=1e-12)
  assert summary['noise_0.50']['steps'] == 12

  class Crash(Exception):
    pass

  def crash_at_7(step):
    if step == 7:
      raise Crash()
  resumed = str(tmp_path / 'resumed')
  with pytest.raises(Crash):
    lo_train.train_and_evaluate(config(), resumed, on_step=crash_at_7)
  lo_train.train_and_evaluate(config(), resumed)
  got = _rows(os.path.join(resumed, 'noise_0.50'))
  assert [r['step'] for r in got] == [r['step'] for r in rows]
  for a, b in zip(got, rows):
    assert {k: v for k, v in a.items() if k != 'seconds'} == {
        k: v for k, v in b.items() if k != 'seconds'}
  with np.load(os.path.join(resumed, 'noise_0.50', 'records.npz')) as r:
    np.testing.assert_array_equal(r['learnt_step'], learnt)


@pytest.mark.slow
def test_easy_hard_on_streamed_mnist(mock_tfds, tmp_path):
  config = _data(eh_tiny.get_config(), 'mnist', mock_tfds, stream=True)
  config.model.widths = (784, 64, 10)
  # Memorizes about 2/3 of the 48 random examples: both halves are sizable.
  config.train.update(dict(batch_size=4, epochs=6, learning_rate=0.02,
                           momentum=0.9))
  config.easy_hard.subset_epochs = 2
  config.measure.every_steps = 2
  summary = eh_train.train_and_evaluate(config, str(tmp_path))
  sizes = summary['split']
  assert sizes['easy'] + sizes['hard'] == MOCK
  with np.load(os.path.join(tmp_path, 'split', 'records.npz')) as r:
    assert int(np.sum(r['learnt_step'] >= 0)) == sizes['easy']
  n = min(sizes['easy'], sizes['hard']) // 2
  assert sizes['easy_train'] == sizes['hard_test'] == sizes['random_train'] == n
  for kind in ('easy', 'hard', 'random'):
    rows = _rows(os.path.join(tmp_path, f'train_{kind}'))
    assert rows[-1]['step'] == 2 * (n // 4)
    for r in rows:
      assert all(_in_unit(r[k]) for k in (
          'train_subset_accuracy', 'easy_test_accuracy',
          'hard_test_accuracy', 'random_test_accuracy', 'test_accuracy'))


@pytest.mark.slow
def test_stability_bound_on_mock_cifar10(mock_tfds, tmp_path):
  config = _data(sb_tiny.get_config(), 'cifar10', mock_tfds)
  config.noise.levels = (0.0, 1.0)
  config.model.widths = (3072, 8, 10)
  config.train.update(dict(batch_size=16, epochs=2))
  config.measure.update(dict(every_steps=2, sample_size=8,
                             microbatch_size=8))
  summary = sb_train.train_and_evaluate(config, str(tmp_path))
  for name in ('noise_0.00', 'noise_1.00'):
    rows = _rows(os.path.join(tmp_path, name))
    assert [r['step'] for r in rows] == [0, 2, 4, 6]
    alpha = np.array([r['alpha_unbiased'] for r in rows])
    assert np.all((alpha >= -1 / 7 - 1e-6) & (alpha <= 1 + 1e-6))
    want = np.sum(0.1 * 2 * np.sqrt(2 * (1 - alpha[:-1])))
    assert summary[name]['final_factor'] == pytest.approx(want, rel=1e-12)
    for r in rows:
      assert all(_in_unit(r[k]) for k in ('train_accuracy', 'test_accuracy',
                                           'noisy_test_accuracy'))
  with np.load(os.path.join(tmp_path, 'noise_1.00', 'corruption.npz')) as c:
    clean = data.load('cifar10', data_dir=mock_tfds)['train']['label']
    np.testing.assert_array_equal(c['corrupt'], c['label'] != clean)
  meta = files.read_json(os.path.join(tmp_path, 'noise_1.00',
                                      'corruption.json'))
  assert meta['selected_fraction'] == 1.0  # p = 1: every label redrawn


@pytest.mark.slow
def test_noisy_median_on_streamed_imagenet(mock_tfds, tmp_path):
  config = nm_default.get_config()  # the ImageNet config, made tiny
  _data(config, 'imagenet2012', mock_tfds, image_size=8, num_threads=4)
  config.model = type(config.model)(dict(name='mlp',
                                         widths=(192, 8, 1000)))
  config.train.update(dict(batch_size=16, epochs=2))
  config.aggregators = ('mean', 'rm3_reference')
  config.measure.update(dict(every_steps=1, eval_size=32, test_eval_size=16,
                             chunk_size=16))
  summary = nm_train.train_and_evaluate(config, str(tmp_path))
  meta = files.read_json(os.path.join(tmp_path, 'corruption.json'))
  assert meta['rule'] == 'uniform_labels'
  assert meta['selected_fraction'] == 24 / MOCK
  for spec, name in (('mean', 'mean'), ('rm3_reference', 'rm3_reference')):
    rows = _rows(os.path.join(tmp_path, name))
    assert [r['step'] for r in rows] == list(range(7))
    for r in rows:
      assert _in_unit(r['train_accuracy']) and _in_unit(r['test_accuracy'])
      assert r['train_accuracy'] * 32 == pytest.approx(
          round(r['train_accuracy'] * 32), abs=1e-9)  # of the 32 sampled
    assert summary[spec] == nm_train.report.summarize(rows)
  ref = _rows(os.path.join(tmp_path, 'rm3_reference'))
  assert ref[1]['train_loss'] == ref[0]['train_loss']  # no step before 3
  with np.load(os.path.join(tmp_path, 'mean',
                            supervised.FIXED_SAMPLES)) as sets:
    assert len(sets['eval']) == 32 and len(sets['held_out']) == 16


@pytest.mark.slow
def test_noisy_labels_on_mock_mnist(mock_tfds, tmp_path):
  config = _data(nl_tiny.get_config(), 'mnist', mock_tfds)
  config.model.widths = (784, 8, 10)
  config.train.update(dict(batch_size=16, epochs=2))
  config.aggregators = ('mean', 'winsorized:2')
  config.measure.update(dict(every_steps=2, sample_size=4))
  summary = nl_train.train_and_evaluate(config, str(tmp_path))
  meta = files.read_json(os.path.join(tmp_path, 'corruption.json'))
  with np.load(os.path.join(tmp_path, 'corruption.npz')) as c:
    clean = data.load('mnist', data_dir=mock_tfds)['train']['label']
    np.testing.assert_array_equal(c['corrupt'], c['label'] != clean)
    assert meta['corrupt_fraction'] == c['corrupt'].mean()
    assert meta['selected_fraction'] == c['selected'].mean()
  for spec in ('mean', 'winsorized_c2'):
    rows = _rows(os.path.join(tmp_path, spec))
    assert [r['step'] for r in rows] == [0, 2, 4, 6]
    for r in rows:
      assert all(_in_unit(r[k]) for k in ('pristine_accuracy',
                                           'corrupt_accuracy',
                                           'test_accuracy'))
      assert math.isfinite(r['pristine_m_coherence'])
      assert math.isfinite(r['corrupt_m_coherence'])
  assert set(summary) == {'mean', 'winsorized:2'}


# ------------------------------------------- several processes, data streamed
_WORKER = r'''
import sys
port, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import jax
jax.config.update('jax_platforms', 'cpu')
if process_id >= 0:  # one of 2 processes x 4 devices (gloo)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_num_cpu_devices', 4)
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=process_id)
else:  # one process x 8 devices
  jax.config.update('jax_num_cpu_devices', 8)
import ml_collections
import tensorflow_datasets as tfds
from experiments.coherence_evolution import train
from experiments.coherence_evolution.configs import tiny
c = tiny.get_config()
c.data = ml_collections.ConfigDict(dict(
    name='mnist', split_seed=0, stream=True, num_threads=2,
    data_dir=workdir + '_tfds'))
c.noise.levels = (0.5,)
c.model.widths = (784, 8, 10)
c.train.update(dict(batch_size=16, epochs=2, checkpoint_every_epochs=1))
# 13 and 21: chunks of 8 split over the processes, a 1-example tail read by
# both; eval and held-out samples with a padded last chunk.
c.measure.update(dict(sample_size=13, microbatch_size=2, dense_until=2,
                      growth=2.0, chunk_size=8, eval_size=21,
                      test_eval_size=11))
with tfds.testing.mock_data(num_examples=48):
  train.train_and_evaluate(c, workdir)
'''


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow  # three processes, ~30-60 s
def test_two_processes_streaming_equal_one(tmp_path):
  """coherence_evolution on streamed mock mnist: 2 processes x 4 devices,
  each reading only its slice of every batch and measurement chunk, write
  the rows of 1 process x 8 devices."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS='',
             TFDS_DATA_DIR=str(tmp_path / 'nowhere'))
  port = str(_free_port())

  def start(process_id, workdir):
    return subprocess.Popen(
        [sys.executable, '-c', _WORKER, port, str(process_id), workdir],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  procs = [start(-1, one), start(0, two), start(1, two)]
  try:
    errs = [p.communicate(timeout=600)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  want = _rows(os.path.join(one, 'noise_0.50'))
  got = _rows(os.path.join(two, 'noise_0.50'))
  assert [r['step'] for r in got] == [r['step'] for r in want] == [
      0, 1, 2, 4, 6]
  for a, b in zip(got, want):
    for key in ('train_accuracy', 'pristine_accuracy', 'corrupt_accuracy',
                'test_accuracy'):
      assert a[key] == b[key]
    # Per-example scores on 8 devices of 1 or 2 processes: the same
    # programs; coherence sums in another order (chunks split differently).
    assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-6)
    assert a['m_coherence'] == pytest.approx(b['m_coherence'], rel=1e-4)
  assert files.read_json(os.path.join(two, 'noise_0.50', 'summary.json'))[
      'corrupt_fraction'] == files.read_json(os.path.join(
          one, 'noise_0.50', 'summary.json'))['corrupt_fraction']
