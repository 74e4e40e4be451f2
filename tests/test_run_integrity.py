"""A run's files damaged between starts: metric rows lost or
repeated, config.json deleted or garbage, a finished run asked for more
epochs. Each is detected and said, never silently reported from."""

import json
import logging
import os

import jax.numpy as jnp
import ml_collections
import pytest

from experiments.common import checkpoints
from experiments.common import files
from experiments.common import loop
from experiments.common import run_config


class Crash(Exception):
  pass


def _config(lr=0.1, epochs=3):
  return ml_collections.ConfigDict(dict(
      seed=0, train=dict(learning_rate=lr, epochs=epochs),
      allow_config_change=False))


def _toy_run(run_dir, crash_at=None, config=None):
  """20 steps, w += 1 per step, measured every 5, checkpoints every 4."""
  def on_step(step):
    if step == crash_at:
      raise Crash()

  def step_fn(state, step):
    return {'w': state['w'] + 1.0}, jnp.array(True)

  return loop.run(
      str(run_dir), state={'w': jnp.zeros(3)}, total_steps=20,
      train_step=step_fn, measure=lambda s, t: {'w': float(s['w'][0])},
      measure_steps=set(range(0, 21, 5)), checkpoint_every=4,
      on_step=on_step,
      metadata=None if config is None else run_config.metadata(config))


def _metrics(run_dir):
  return str(run_dir / 'metrics.jsonl')


def _drop_rows(path, steps):
  kept = [r for r in files.read_rows(path) if r['step'] not in steps]
  files.write_atomic(path, ''.join(json.dumps(r) + '\n' for r in kept))


@pytest.mark.parametrize('lost', [{5}, {0, 5, 10}])  # a middle row; the file
def test_rows_lost_before_the_checkpoint_mark_the_run_incomplete(
    tmp_path, caplog, lost):
  with pytest.raises(Crash):
    _toy_run(tmp_path, crash_at=14)  # checkpoint at 12; rows 0, 5, 10
  if lost == {0, 5, 10}:
    os.remove(_metrics(tmp_path))
  else:
    _drop_rows(_metrics(tmp_path), lost)
  with caplog.at_level(logging.WARNING):
    rows = _toy_run(tmp_path)
  assert 'lacks the rows of' in caplog.text and 'incomplete' in caplog.text
  assert [r['step'] for r in rows] == sorted({0, 5, 10, 15, 20} - lost)
  assert loop.completeness(str(tmp_path)) == {
      'complete': False, 'missing_steps': sorted(lost)}
  summary = loop.write_summary(str(tmp_path), {'peak': 1.0})
  assert summary['complete'] is False
  assert files.read_json(str(tmp_path / 'summary.json'))['missing_steps'] == (
      sorted(lost))


def test_a_whole_run_is_complete(tmp_path):
  with pytest.raises(Crash):
    _toy_run(tmp_path, crash_at=14)
  _toy_run(tmp_path)
  assert loop.completeness(str(tmp_path)) == {}
  assert 'complete' not in loop.write_summary(str(tmp_path), {'a': 1})


def test_repeated_rows_stop_a_resume(tmp_path):
  with pytest.raises(Crash):
    _toy_run(tmp_path, crash_at=14)
  rows = files.read_rows(_metrics(tmp_path))
  files.append_row(_metrics(tmp_path), rows[0])  # a second writer's row
  with pytest.raises(ValueError, match='damaged metrics: steps not strictly '
                     r'increasing at \[0\].*two runs'):
    _toy_run(tmp_path)


def test_checkpoints_carry_the_config(tmp_path):
  """config.json deleted on a half-done run: a restart with another learning
  rate is refused against the checkpoints' config; the same config writes
  config.json back."""
  run_dir = tmp_path / 'noise_0.00'
  run_config.check_and_save(_config(), str(tmp_path))
  with pytest.raises(Crash):
    _toy_run(run_dir, crash_at=14, config=_config())
  step, meta = checkpoints.saved_metadata(str(run_dir / 'checkpoints'))
  assert step == 12 and meta['config'] == run_config.as_json(_config())
  os.remove(tmp_path / 'config.json')
  with pytest.raises(ValueError, match=r'another config \(its checkpoint '
                     r'.*noise_0.00/checkpoints/12 \(.*config.json is '
                     r'missing\)\).*\n  train.learning_rate: 0.1 -> 0.5'):
    run_config.check_and_save(_config(lr=0.5), str(tmp_path))
  assert not os.path.exists(tmp_path / 'config.json')
  run_config.check_and_save(_config(), str(tmp_path))
  assert files.read_json(str(tmp_path / 'config.json')) == (
      run_config.as_json(_config()))


@pytest.mark.parametrize('text', ['', '{"seed": 0', '[1, 2]'])
def test_garbage_config_json_names_the_file(tmp_path, text):
  (tmp_path / 'config.json').write_text(text)
  with pytest.raises(ValueError, match=f'{tmp_path}/config.json: not a '
                     'config.*Delete it'):
    run_config.check_and_save(_config(), str(tmp_path))


def test_a_finished_run_is_not_extended_to_more_epochs(tmp_path):
  run_config.check_and_save(_config(), str(tmp_path))
  files.write_json(str(tmp_path / 'noise_0.00' / 'summary.json')
                   if os.makedirs(tmp_path / 'noise_0.00') is None else '', {})
  longer = _config(epochs=25)
  longer.allow_config_change = True
  with pytest.raises(ValueError, match=r'train.epochs: 3 -> 25: .* holds '
                     r'finished runs .*not extended.*new --workdir'):
    run_config.check_and_save(longer, str(tmp_path))
  other_lr = _config(lr=0.5)  # other changes still go through the override
  other_lr.allow_config_change = True
  run_config.check_and_save(other_lr, str(tmp_path))


def test_any_damaged_json_file_is_named(tmp_path):
  (tmp_path / 'summary.json').write_text('{')
  with pytest.raises(ValueError, match=f'{tmp_path}/summary.json: not valid '
                     'JSON'):
    files.read_json(str(tmp_path / 'summary.json'))
