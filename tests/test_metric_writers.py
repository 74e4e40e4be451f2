"""Every metric row goes to metrics.jsonl and to TensorBoard event files.

The event files are read back with tensorboard's own reader
(`EventAccumulator`, in the test extra) and must equal metrics.jsonl, also
after a crash and resume (the events after the checkpoint are purged, as the
rows after it are dropped). Event files store float32: values agree to
float32 rounding (rtol 2**-24 ≈ 6e-8; 1e-7 here).
"""

import glob
import os

import jax.numpy as jnp
import pytest

from experiments.common import files
from experiments.common import loop
from experiments.common import metric_writers

RTOL = 1e-7


def assert_events_equal_rows(run_dir):
  rows = files.read_rows(os.path.join(run_dir, 'metrics.jsonl'))
  events = metric_writers.read_event_scalars(run_dir)
  assert sorted(events) == [r['step'] for r in rows]
  for row in rows:
    want = metric_writers.flatten(row)
    got = events[row['step']]
    assert sorted(got) == sorted(want), row['step']
    for tag, value in want.items():
      assert metric_writers.same_value(got[tag], value, RTOL), (tag, got[tag],
                                                                 value)
  return rows, events


class Crash(Exception):
  pass


def _run(run_dir, attempt, crash_at=None):
  def step_fn(state, step):
    return {'w': state['w'] + 1.0}, jnp.bool_(True)

  def measure(state, step):
    w = float(state['w'][0])
    return {'w': w, 'attempt': attempt, 'noise_scale': float('inf'),
            'alpha_unbiased': float('nan'), 'method': 'auto',
            'modules': {'layers/0': w / 2, 'layers/1': {'share': 0.25}}}

  def on_step(step):
    if step == crash_at:
      raise Crash()

  return loop.run(str(run_dir), state={'w': jnp.zeros(2)}, total_steps=20,
                  train_step=step_fn, measure=measure,
                  measure_steps={0, 5, 10, 15, 20}, checkpoint_every=12,
                  on_step=on_step)


def test_event_files_equal_metrics_jsonl_across_a_resume(tmp_path):
  with pytest.raises(Crash):
    _run(tmp_path, attempt=1, crash_at=19)   # rows 0..15; checkpoint at 12
  _run(tmp_path, attempt=2)                  # resumes at 12: 15 and 20 again
  assert len(glob.glob(str(tmp_path / 'events.out.tfevents.*'))) == 2
  rows, events = assert_events_equal_rows(str(tmp_path))
  assert [r['attempt'] for r in rows] == [1, 1, 1, 2, 2]
  assert events[15]['attempt'] == 2.0   # the first attempt's 15 is purged
  assert events[20]['modules/layers/1/share'] == 0.25


def test_writer_of_ones_own_gets_scalars():
  class Collect(metric_writers.MetricWriter):
    def __init__(self):
      self.seen = []

    def write_scalars(self, step, scalars):
      self.seen.append((step, dict(scalars)))

  with Collect() as w:
    w.write_row({'step': 3, 'loss': 1.0, 'modules': {'a': 2.0}, 'tag': 'x'})
  assert w.seen == [(3, {'loss': 1.0, 'modules/a': 2.0})]
