"""The noisy-labels experiment end to end on its tiny config: the numbers it
writes, the corruption it saves, crash and resume, validation, and its report."""

import math
import os

import numpy as np
import pytest

from experiments.common import data
from experiments.common import files
from experiments.noisy_labels import report
from experiments.noisy_labels import train
from experiments.noisy_labels.configs import tiny


class Crash(Exception):
  pass


def _never(step):
  raise AssertionError(f'a finished run trained again (step {step})')


def tiny_config():
  """The tiny config on one device: the 8 simulated devices of the test run
  make the per-example aggregators ~5x slower per step on 2 CPU cores, and
  the data-parallel path is covered by tests/test_data_parallel.py."""
  config = tiny.get_config()
  config.mesh.data = 1
  return config


# The finished tiny sweep (~12 s) and the tests that read it are in the slow
# tier with the other experiments' end-to-end runs; the default tier keeps
# the config validation and the report functions.
SWEEP = pytest.mark.slow


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished tiny sweep: (config, workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp('noisy'))
  config = tiny_config()
  return config, workdir, train.train_and_evaluate(config, workdir)


def _rows(workdir, spec):
  return files.read_rows(os.path.join(workdir, train.run_dir_name(spec),
                                      'metrics.jsonl'))


@SWEEP
def test_tiny_sweep_writes_consistent_numbers(finished):
  config, workdir, summary = finished
  assert list(summary) == list(config.aggregators)
  assert files.read_json(os.path.join(workdir, 'summary.json')) == summary
  for spec in config.aggregators:
    rows = _rows(workdir, spec)
    assert [r['step'] for r in rows] == [0, 40, 80, 120]
    for r in rows:
      for key in ('pristine_accuracy', 'corrupt_accuracy', 'test_accuracy'):
        assert 0.0 <= r[key] <= 1.0
      for key in ('pristine_m_coherence', 'corrupt_m_coherence'):
        assert math.isfinite(r[key]) and r[key] > 0
    assert report.summarize(rows) == summary[spec]
    # Pristine labels are learned; corrupt ones are not (yet) memorized.
    assert rows[-1]['pristine_accuracy'] > 0.8
    assert rows[-1]['corrupt_accuracy'] < 0.1
  table = open(os.path.join(workdir, 'table.md')).read().splitlines()
  assert [line.split(' | ')[0] for line in table[2:]] == [
      f'| {spec}' for spec in config.aggregators]
  assert os.path.getsize(os.path.join(workdir, 'noisy_labels.png')) > 10_000


@SWEEP
def test_winsorized_does_not_memorize_more_than_mean(finished):
  _, _, summary = finished
  # At this tiny size neither run memorizes (both fall below chance as the
  # true labels are learned), so allow the noise of one run vs another.
  assert (summary['winsorized:4']['final_corrupt_accuracy']
          <= summary['mean']['final_corrupt_accuracy'] + 0.01)


@SWEEP
def test_corruption_is_saved_with_its_fractions(finished):
  config, workdir, _ = finished
  meta = files.read_json(os.path.join(workdir, 'corruption.json'))
  assert meta['p'] == config.noise.p and meta['seed'] == config.noise.seed
  assert meta['selected_fraction'] == pytest.approx(config.noise.p, abs=0.03)
  assert meta['corrupt_fraction'] == pytest.approx(0.9 * config.noise.p,
                                                   abs=0.03)
  with np.load(os.path.join(workdir, 'corruption.npz')) as saved:
    clean = data.load('mnist5k', config.data.split_seed)['train']['label']
    np.testing.assert_array_equal(saved['corrupt'], saved['label'] != clean)
    assert saved['corrupt'].mean() == meta['corrupt_fraction']
    assert not (saved['corrupt'] & ~saved['selected']).any()


@SWEEP
def test_finished_sweep_is_not_trained_again_and_refuses_changes(finished):
  config, workdir, summary = finished
  assert train.train_and_evaluate(config, workdir, on_step=_never) == summary
  changed = tiny_config()
  changed.aggregators = ('mean', 'winsorized:2')
  with pytest.raises(ValueError, match=r"aggregators: \['mean', 'winsorized:4'"
                     r"\] -> \['mean', 'winsorized:2'\]"):
    train.train_and_evaluate(changed, workdir, on_step=_never)
  # Even when changes are allowed, the saved corruption cannot be redrawn.
  changed = tiny_config()
  changed.noise.p = 0.3
  changed.allow_config_change = True
  with pytest.raises(ValueError, match=r"holds examples noised with \{'kind': "
                     r"'permute', 'p': 0.5, 'seed': 1\}: pass a new --workdir"):
    train.train_and_evaluate(changed, workdir, on_step=_never)


@pytest.mark.slow
def test_crashed_sweep_resumes_to_the_same_rows(tmp_path):
  """Aggregator states (rm3's buffer of past gradients) survive a restart."""
  config = tiny_config()
  config.train.epochs = 2
  config.aggregators = ('winsorized:4', 'rm3')
  train.train_and_evaluate(config, str(tmp_path / 'a'))
  crashes = []

  def crash_at_50(step):  # once in each run
    if step == 50 and len(crashes) < 2:
      crashes.append(step)
      raise Crash()
  for _ in range(2):
    with pytest.raises(Crash):
      train.train_and_evaluate(config, str(tmp_path / 'b'),
                               on_step=crash_at_50)
  train.train_and_evaluate(config, str(tmp_path / 'b'), on_step=crash_at_50)
  assert len(crashes) == 2
  for spec in config.aggregators:
    got = _rows(str(tmp_path / 'b'), spec)
    want = _rows(str(tmp_path / 'a'), spec)
    assert [r['step'] for r in got] == [r['step'] for r in want] == [0, 40, 80]
    for a, b in zip(got, want):
      assert a['corrupt_accuracy'] == b['corrupt_accuracy']
      assert a['test_accuracy'] == b['test_accuracy']
      np.testing.assert_allclose(a['pristine_m_coherence'],
                                 b['pristine_m_coherence'], rtol=1e-5)


@pytest.mark.slow
def test_winsorized_memorizes_less_than_mean_when_mean_memorizes(tmp_path):
  """784-256-10, 15 epochs at lr 0.2: mean starts to fit the noisy labels
  (corrupt accuracy 0.13 at the end), winsorized:4 about half as much (0.06)."""
  config = tiny_config()
  config.model.widths = (784, 256, 10)
  config.train.epochs = 15
  config.train.learning_rate = 0.2
  config.measure.every_steps = 200
  summary = train.train_and_evaluate(config, str(tmp_path))
  mean, robust = summary['mean'], summary['winsorized:4']
  assert mean['final_corrupt_accuracy'] > 0.1
  assert (robust['final_corrupt_accuracy']
          < mean['final_corrupt_accuracy'] - 0.03)


@pytest.mark.parametrize('field,value,match', [
    ('noise.p', 1.5, r'config.noise.p: got 1.5; pass a probability in \(0, 1\]'),
    ('noise.p', -0.1, r'config.noise.p: got -0.1'),
    ('noise.p', 0.0, r'config.noise.p: got 0.0'),
    ('aggregators', ('mean', 'bogus'), r"config.aggregators: aggregator: got 'bogus'"),
    ('aggregators', ('winsorized:x',), r'config.aggregators: .*needs an integer'),
    ('aggregators', ('median_of_means:7',), r'does not divide the batch size 100'),
    ('aggregators', ('mean', 'mean'), r'config.aggregators: got'),
    ('aggregators', (), r'config.aggregators: got \(\)'),
    ('measure.sample_size', 5000, r'config.measure.sample_size'),
    ('measure.every_steps', 0, r'config.measure.every_steps: got 0'),
    ('train.epochs', -1, r'config.train.epochs: got -1'),
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, field,
                                                          value, match):
  config = tiny_config()
  parent, _, name = field.rpartition('.')
  (config[parent] if parent else config)[name] = value
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(workdir), on_step=_never)
  assert not workdir.exists()


def _row(step, test, pristine, corrupt, seconds):
  return {'step': step, 'test_accuracy': test, 'pristine_accuracy': pristine,
          'corrupt_accuracy': corrupt, 'seconds': seconds}


def test_summarize_picks_the_first_test_peak_and_the_final_numbers():
  rows = [_row(0, 0.1, 0.1, 0.1, 1.0), _row(10, 0.8, 0.7, 0.05, 3.0),
          _row(20, 0.8, 0.9, 0.2, 5.0), _row(30, 0.7, 0.95, 0.4, 7.0)]
  assert report.summarize(rows) == {
      'final_test_accuracy': 0.7, 'peak_test_accuracy': 0.8,
      'peak_test_step': 10, 'final_pristine_accuracy': 0.95,
      'final_corrupt_accuracy': 0.4, 'corrupt_accuracy_at_peak_test': 0.05,
      'seconds_per_step': 7.0 / 30}
  with pytest.raises(ValueError, match='rows'):
    report.summarize([])


def test_format_table_has_a_row_per_aggregator_in_order():
  rows = [_row(0, 0.1, 0.1, 0.1, 0.0), _row(40, 0.8512, 0.9, 0.02, 8.0)]
  table = report.format_table({'mean': report.summarize(rows),
                               'winsorized:4': report.summarize(rows[:1])})
  lines = table.splitlines()
  assert lines[0] == ('| aggregator | ' + ' | '.join(report.SUMMARY_KEYS)
                      + ' |')
  assert lines[1] == '|---|' + '---:|' * len(report.SUMMARY_KEYS)
  assert lines[2] == '| mean | 0.851 | 0.851 | 40 | 0.900 | 0.020 | 0.020 | 0.200 |'
  assert lines[3].startswith('| winsorized:4 | 0.100 | 0.100 | 0 |')
  assert len(lines) == 4
