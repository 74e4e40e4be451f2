"""The demo experiment end to end on a tiny config; crash and resume."""

import json

import numpy as np
import pytest

from experiments import coherence_run
from experiments import jsonl
from experiments import real_vs_random_lib
from experiments import schedule
from experiments.configs import real_vs_random as config_module


def tiny_config():
  config = config_module.get_config()
  config.model.widths = (784, 16, 10)
  config.train.epochs = 3
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.checkpoint_every_epochs = 1
  config.measure.sample_size = 40
  config.measure.microbatch_size = 16
  config.measure.growth = 1.5
  return config


@pytest.fixture(scope='module')
def dataset():
  return coherence_run.load_data(tiny_config())


def test_schedule_is_dense_then_geometric():
  steps = schedule.measurement_steps(2400, 40, 1.15)
  assert steps[:41] == list(range(41)) and steps[-1] == 2400
  gaps = np.diff(steps[41:])
  assert np.all(gaps >= 1) and gaps[-2] > gaps[0]
  assert len(steps) < 80


def test_demo_writes_metrics_plot_and_summary(tmp_path, dataset):
  config = tiny_config()
  summary = real_vs_random_lib.run(config, str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert set(on_disk) == {'real', 'random'}
  for mode in ('real', 'random'):
    for key in ('early_m_coherence', 'peak_m_coherence', 'final_m_coherence',
                'train_accuracy', 'test_accuracy'):
      assert np.isfinite(on_disk[mode][key])
    rows = jsonl.read_rows(str(tmp_path / mode / 'metrics.jsonl'))
    steps = [r['step'] for r in rows]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 24
    assert set(rows[0]['modules']) == {'layers/0', 'layers/1'}
    assert 0 < rows[0]['m_coherence'] <= 40
  assert (tmp_path / 'real_vs_random.png').stat().st_size > 10_000
  # Real labels are learned; random ones are not generalisable.
  assert summary['real']['test_accuracy'] > 0.6
  assert summary['random']['test_accuracy'] < 0.25
  labels = np.load(tmp_path / 'random' / 'train_labels.npy')
  assert np.mean(labels == dataset['train']['label']) < 0.2


class Crash(Exception):
  pass


def test_crashed_run_resumes_without_losing_or_duplicating_rows(tmp_path,
                                                                 dataset):
  config = tiny_config()
  reference = coherence_run.run_label_mode(config, str(tmp_path / 'a'), 'real',
                                           dataset)
  def crash_at_19(step):
    if step == 19:
      raise Crash()
  with pytest.raises(Crash):
    coherence_run.run_label_mode(config, str(tmp_path / 'b'), 'real', dataset,
                                 on_step=crash_at_19)
  assert not (tmp_path / 'b' / 'real' / 'summary.json').exists()
  resumed = coherence_run.run_label_mode(config, str(tmp_path / 'b'), 'real',
                                         dataset)
  want = jsonl.read_rows(str(tmp_path / 'a' / 'real' / 'metrics.jsonl'))
  got = jsonl.read_rows(str(tmp_path / 'b' / 'real' / 'metrics.jsonl'))
  assert [r['step'] for r in got] == [r['step'] for r in want]
  for a, b in zip(got, want):
    np.testing.assert_allclose(a['m_coherence'], b['m_coherence'], rtol=1e-5)
    assert a['train_accuracy'] == b['train_accuracy']
  assert resumed['final_m_coherence'] == pytest.approx(
      reference['final_m_coherence'], rel=1e-5)
  # A finished run is not repeated.
  again = coherence_run.run_label_mode(config, str(tmp_path / 'b'), 'real',
                                       dataset, on_step=crash_at_19)
  assert again == resumed


def test_unknown_label_mode_is_rejected():
  with pytest.raises(ValueError, match='label mode'):
    coherence_run.labels_for_mode(np.zeros(3, np.int32), 'shuffled', 0)
