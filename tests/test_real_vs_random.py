"""The real-vs-random experiment end to end on its tiny config: the numbers it
writes, crash and resume, config changes, validation, and its main."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments.common import files
from experiments.real_vs_random import report
from experiments.real_vs_random import train
from experiments.real_vs_random.configs import tiny
from tests import test_metric_writers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Crash(Exception):
  pass


def _never(step):
  raise AssertionError(f'a finished run trained again (step {step})')


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished tiny run: (config, workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp('rvr'))
  config = tiny.get_config()
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_tiny_run_writes_consistent_numbers(finished):
  config, workdir, summary = finished
  assert files.read_json(os.path.join(workdir, 'summary.json')) == summary
  # Every step of epoch 1 (dense_until=8), then 1.5x apart, and the last.
  want_steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 18, 24]
  for mode in ('real', 'random'):
    rows = files.read_rows(os.path.join(workdir, mode, 'metrics.jsonl'))
    assert [r['step'] for r in rows] == want_steps
    for r in rows:
      assert 0.0 <= r['train_accuracy'] <= 1.0
      assert 0.0 <= r['test_accuracy'] <= 1.0
      assert math.isfinite(r['m_coherence']) and r['m_coherence'] > 0
      assert r['m_coherence'] <= config.measure.sample_size
      assert set(r['modules']) == {'layers/0', 'layers/1'}
      assert r['epoch'] == r['step'] / 8
    # The training batch, measured by the step's own backward pass, and the
    # TensorBoard events next to metrics.jsonl.
    for r in rows[:-1]:   # the last step has no training batch
      assert 0 <= r['batch_m_coherence'] <= config.train.batch_size
      assert r['batch_noise_scale'] >= 0
    assert 'batch_m_coherence' not in rows[-1]
    assert {r['learning_rate'] for r in rows} == {config.train.learning_rate}
    test_metric_writers.assert_events_equal_rows(os.path.join(workdir, mode))
    seconds = [r['seconds'] for r in rows]
    assert seconds == sorted(seconds) and summary[mode]['seconds'] == seconds[-1]
    assert report.summarize(rows, dense_until=8) == summary[mode]
  # Real labels are learned and coherent early; random ones are neither.
  assert summary['real']['test_accuracy'] > 0.6
  assert summary['random']['test_accuracy'] < 0.25
  assert (summary['real']['early_m_coherence']
          > 1.5 * summary['random']['early_m_coherence'])
  labels = np.load(os.path.join(workdir, 'random', 'train_labels.npy'))
  real = np.load(os.path.join(workdir, 'real', 'train_labels.npy'))
  assert np.mean(labels == real) < 0.2
  table = open(os.path.join(workdir, 'table.md')).read()
  assert table.splitlines()[0] == '| metric | real | random |'
  for key in report.TABLE_KEYS:
    assert f'| {key} |' in table
  assert (f'| test_accuracy | {summary["real"]["test_accuracy"]:.3f} | '
          f'{summary["random"]["test_accuracy"]:.3f} |') in table.splitlines()
  assert os.path.getsize(os.path.join(workdir, 'real_vs_random.png')) > 10_000
  assert files.read_json(os.path.join(workdir, 'config.json')) == json.loads(
      config.to_json_best_effort())


def test_finished_workdir_is_not_trained_again(finished):
  config, workdir, summary = finished
  assert train.train_and_evaluate(config, workdir, on_step=_never) == summary


def test_finished_workdir_refuses_another_config(finished, capsys):
  config, workdir, _ = finished
  before = {name: open(os.path.join(workdir, name)).read()
            for name in ('config.json', 'summary.json', 'table.md')}
  changed = tiny.get_config()
  changed.train.learning_rate = 0.5
  changed.train.epochs = 4
  capsys.readouterr()
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(changed, workdir, on_step=_never)
  assert 'train.learning_rate: 0.1 -> 0.5' in str(e.value)
  assert 'train.epochs: 3 -> 4' in str(e.value)
  assert 'allow_config_change' in str(e.value)
  assert capsys.readouterr().out == ''  # no old table printed
  for name, text in before.items():
    assert open(os.path.join(workdir, name)).read() == text


def test_crashed_run_resumes_without_losing_or_duplicating_rows(finished,
                                                                 tmp_path):
  _, reference_dir, reference = finished
  reference = reference['real']
  config = tiny.get_config()
  config.label_modes = ('real',)

  def crash_at_19(step):
    if step == 19:
      raise Crash()
  with pytest.raises(Crash):
    train.train_and_evaluate(config, str(tmp_path / 'b'), on_step=crash_at_19)
  assert not (tmp_path / 'b' / 'real' / 'summary.json').exists()
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))['real']
  want = files.read_rows(os.path.join(reference_dir, 'real', 'metrics.jsonl'))
  got = files.read_rows(str(tmp_path / 'b' / 'real' / 'metrics.jsonl'))
  assert [r['step'] for r in got] == [r['step'] for r in want]
  for a, b in zip(got, want):
    np.testing.assert_allclose(a['m_coherence'], b['m_coherence'], rtol=1e-5)
    assert a['train_accuracy'] == b['train_accuracy']
  assert resumed['final_m_coherence'] == pytest.approx(
      reference['final_m_coherence'], rel=1e-5)
  # The time before the crash is counted: seconds never go backwards.
  seconds = [r['seconds'] for r in got]
  assert seconds == sorted(seconds)


@pytest.mark.parametrize('field,value,match', [
    ('train.epochs', 0, r'config.train.epochs: got 0; pass an integer >= 1'),
    ('train.batch_size', 0, r'config.train.batch_size: got 0; pass 1..4000'),
    ('train.batch_size', 4001, r'config.train.batch_size: got 4001'),
    ('model.widths', (785, 16, 10), r'config.model.widths: .*784 input pixels'),
    ('model.widths', (784, 16, 11), r'config.model.widths: .*10 classes'),
    ('train.learning_rate', 0.0, r'config.train.learning_rate: got 0.0'),
    ('train.learning_rate', float('nan'), r'config.train.learning_rate: got nan'),
    ('train.learning_rate', float('inf'), r'config.train.learning_rate: got inf'),
    ('data.name', 'svhn', r'config.data.name: got .svhn.'),
    ('measure.sample_size', 4001, r'config.measure.sample_size: got 4001'),
    ('measure.growth', 1.0, r'config.measure.growth: got 1.0; pass a factor > 1'),
    ('label_modes', ('real', 'shuffled'), r'config.label_modes'),
    ('measure.method', 'magic', r'config.measure.method'),
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, field,
                                                          value, match):
  config = tiny.get_config()
  parent, _, name = field.rpartition('.')
  (config[parent] if parent else config)[name] = value
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(workdir), on_step=_never)
  assert not workdir.exists()


def test_unknown_label_mode_is_rejected():
  with pytest.raises(ValueError, match='label mode'):
    train.labels_for_mode(np.zeros(3, np.int32), 'shuffled', 0)


@pytest.mark.slow  # a subprocess run of main (~13 s)
def test_main_exits_non_zero_naming_the_step_when_training_diverges(tmp_path):
  """From another directory, with the default config (found via the package,
  made small on the command line)."""
  workdir = tmp_path / 'run'
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.real_vs_random.main',
       f'--workdir={workdir}', '--config.train.learning_rate=1e30',
       '--config.label_modes=("real",)', '--config.model.widths=(784,16,10)',
       '--config.measure.sample_size=20'],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  found = re.search(r'NonFiniteError: step (\d+): ', proc.stderr)
  assert found, proc.stderr[-2000:]
  bad_step = int(found.group(1))
  saved = files.read_json(str(workdir / 'config.json'))
  assert saved['train']['epochs'] == 60  # the default config
  assert saved['model']['widths'] == [784, 16, 10]  # with the override
  assert not os.listdir(workdir / 'real' / 'checkpoints')
  rows = files.read_rows(str(workdir / 'real' / 'metrics.jsonl'))
  # Measured up to the step that diverged (its params, from the step before,
  # may already overflow the loss), nothing after it.
  assert [r['step'] for r in rows] == list(range(bad_step + 1))
  assert math.isfinite(rows[0]['m_coherence'])
