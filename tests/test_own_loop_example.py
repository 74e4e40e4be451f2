"""The worked example (experiments/own_loop_example.py) runs at tiny sizes.

Its event files equal its metrics.jsonl (read back with tensorboard's
reader), it measures on the schedule's steps, and it reports the overhead.
"""

from experiments import own_loop_example
from experiments.common import files
from tests import test_metric_writers


def test_example_logs_coherence_on_its_schedule(tmp_path):
  summary = own_loop_example.train(
      str(tmp_path), steps=7, every=3, batch_size=16, image_size=8,
      train_size=200, timing_reps=2)
  rows = files.read_rows(str(tmp_path / 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [0, 3, 6]   # every 3, and the last
  assert summary['measured_steps'] == 3
  for row in rows:
    assert 0 <= row['m_coherence'] <= 16
    assert set(row['modules']) == {'conv1', 'conv2', 'dense1', 'dense2'}
  test_metric_writers.assert_events_equal_rows(str(tmp_path))
  assert summary['overhead_ratio'] > 0 and summary['plain_step_ms'] > 0
