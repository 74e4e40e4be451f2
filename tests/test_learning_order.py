"""learning_order end to end at micro size: per-example records consistent with
the rows, the records' update rule against a brute-force loop, the onset rule,
and the loop's progress lines."""

import logging
import os

import numpy as np
import pytest

from experiments.common import files
from experiments.common import progress
from experiments.common import records
from experiments.learning_order import report
from experiments.learning_order import train
from experiments.learning_order.configs import tiny


def micro_config():
  config = tiny.get_config()
  config.data.name = 'mnist5k'
  config.model.widths = (784, 8, 10)
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.epochs = 2
  config.train.checkpoint_every_epochs = 1
  config.measure.every_steps = 4
  config.mesh.data = 1
  return config


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('learning_order'))
  config = micro_config()
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow  # ~5 s of CPU
def test_records_agree_with_the_rows(finished):
  _, workdir, summary = finished
  run_dir = os.path.join(workdir, 'noise_0.50')
  rows = files.read_rows(os.path.join(run_dir, 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [0, 4, 8, 12, 16]
  with np.load(os.path.join(run_dir, 'records.npz')) as r:
    learnt, first = r['learnt_step'], r['first_correct_step']
  with np.load(os.path.join(run_dir, 'corruption.npz')) as c:
    corrupt = c['corrupt']
  assert set(np.unique(learnt)) <= {-1, 0, 4, 8, 12, 16}
  assert np.all((learnt < 0) | (first <= learnt))
  # learnt >= 0 exactly for the examples correct at the last measurement.
  final = rows[-1]
  assert np.mean(learnt >= 0) == pytest.approx(final['train_accuracy'],
                                               abs=1e-12)
  assert np.mean(learnt[corrupt] >= 0) == pytest.approx(
      final['corrupt_accuracy'], abs=1e-12)
  s = summary['noise_0.50']
  assert s['best_test_step'] in {0, 4, 8, 12, 16}
  assert s == pytest.approx(report.summarize(rows, learnt, corrupt, 0.05,
                                             first), nan_ok=True)
  text = open(os.path.join(workdir, 'report.md')).read()
  assert '| 50 % noise |' in text
  assert os.path.getsize(os.path.join(workdir,
                                      'learning_order_0.50.png')) > 10_000


def test_records_update_against_a_brute_force_loop():
  rng = np.random.default_rng(0)
  correct = rng.random((6, 50)) < 0.6  # 6 measurements of 50 examples
  steps = [0, 3, 7, 8, 20, 31]
  r = records.init(50)
  for step, c in zip(steps, correct):
    r = records.update(r, c, step)
    r = records.update(r, c, step)  # idempotent: a resumed run repeats it
  for i in range(50):
    col = correct[:, i]
    want_first = steps[int(np.argmax(col))] if col.any() else -1
    want_learnt = -1
    if col[-1]:
      k = len(col) - 1
      while k > 0 and col[k - 1]:
        k -= 1
      want_learnt = steps[k]
    assert r['first_correct_step'][i] == want_first
    assert r['learnt_step'][i] == want_learnt


def test_memorization_onset_rule():
  rows = [{'step': s, 'corrupt_accuracy': a} for s, a in
          [(0, 0.1), (10, 0.03), (20, 0.02), (30, 0.06), (40, 0.08)]]
  out = report.memorization_onset(rows, 0.05)
  assert (out['min_corrupt_step'], out['onset_step']) == (20, 40)
  assert report.memorization_onset(rows, 0.5)['onset_step'] is None


def test_progress_lines_say_rate_eta_and_metrics(caplog):
  now = [0.0]
  reporter = progress.Reporter('run', start=0, total=100, every_seconds=10,
                               clock=lambda: now[0])
  caplog.set_level(logging.INFO)
  now[0] = 5.0
  assert not reporter.maybe_log(10)
  now[0] = 20.0
  assert reporter.maybe_log(40, None, {'step': 30, 'test_accuracy': 0.5})
  line = caplog.records[-1].getMessage()
  assert 'step 40/100 (40 %), 2.00 steps/s, ETA 30 s' in line
  assert 'test_accuracy=0.5' in line
