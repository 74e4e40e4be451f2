"""experiments/common: aggregator specs, metric files, checkpoints, the loop,
the config guard and validation, on toy states (fast)."""

import glob
import json
import logging
import os
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from experiments.common import aggregator_specs
from experiments.common import data
from experiments.common import files
from experiments.common import loop
from experiments.common import run_config
from experiments.common import measure
from experiments.common import train_step
from experiments.noisy_labels import main as noisy_main
from tests import helpers


# ---------------------------------------------------------------- specs
@pytest.mark.parametrize('spec,want', [
    ('mean', ('mean', None)), ('winsorized:4', ('winsorized', 4)),
    ('trimmed:0', ('trimmed', 0)), ('median_of_means', ('median_of_means', 3)),
    ('median_of_means:5', ('median_of_means', 5)), ('rm3', ('rm3', None)),
    ('ra3', ('ra3', None)), ('m3', ('m3', None))])
def test_every_spec_parses_and_builds_a_step_that_learns(spec, want):
  assert aggregator_specs.parse(spec, batch_size=30) == want
  loss_fn, params = helpers.tiny_mlp()
  grad_fn, optimizer = aggregator_specs.build(spec, loss_fn, 0.1)
  step = train_step.make_train_step(grad_fn, optimizer)
  state = {'params': params, 'opt_state': optimizer.init(params)}
  batch = helpers.tiny_batch(30)
  before = float(jnp.mean(loss_fn(params, batch)))
  for _ in range(6):
    state, finite = step(state, batch)
    assert bool(finite)
  assert float(jnp.mean(loss_fn(state['params'], batch))) < before


@pytest.mark.parametrize('spec,match', [
    ('median', 'pass one of'), ('winsorized:x', 'needs an integer'),
    ('winsorized', 'needs an integer'), ('trimmed:-1', 'C must be >= 0'),
    ('median_of_means:0', 'K must be >= 1'), ('rm3:2', 'takes no argument'),
    ('mean,rm3', 'pass one of'), ('winsorized:15', r'2C\+1 <= batch size 30'),
    ('median_of_means:7', 'does not divide the batch size 30'),
    ('winsorized:4_0', 'plain digits'), ('winsorized: 4', 'plain digits'),
    ('winsorized:+4', 'plain digits'), ('winsorized:٤', 'plain digits')])
def test_bad_specs_are_clear_value_errors(spec, match):
  with pytest.raises(ValueError, match=match):
    aggregator_specs.parse(spec, batch_size=30)


def test_config_flag_overrides_the_aggregator_tuple():
  """The override the noisy-labels config documents works with config_flags."""
  path = os.path.join(os.path.dirname(noisy_main.__file__), 'configs',
                      'tiny.py')
  argv = ['prog', f'--config={path}',
          '--config.aggregators=("mean","winsorized:4","trimmed:2")',
          '--config.allow_config_change=True']
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', path, flag_values=values,
                                  sys_argv=argv)
  values(argv)
  assert values.config.aggregators == ('mean', 'winsorized:4', 'trimmed:2')
  assert values.config.allow_config_change is True


def test_train_step_flags_non_finite_params():
  loss_fn, params = helpers.tiny_mlp()
  grad_fn, optimizer = aggregator_specs.build('mean', loss_fn, float('inf'))
  step = train_step.make_train_step(grad_fn, optimizer)
  _, finite = step({'params': params, 'opt_state': optimizer.init(params)},
                   helpers.tiny_batch(8))
  assert not bool(finite)


# ---------------------------------------------------------------- files
def test_partial_last_line_is_dropped_with_a_warning(tmp_path, caplog):
  path = str(tmp_path / 'metrics.jsonl')
  files.append_row(path, {'step': 0})
  files.append_row(path, {'step': 1})
  with open(path, 'a') as f:
    f.write('{"step": 2, "m_coh')  # a kill in the middle of an append
  with caplog.at_level(logging.WARNING):
    assert files.read_rows(path) == [{'step': 0}, {'step': 1}]
  assert 'partial last line' in caplog.text


def test_a_broken_line_inside_the_file_is_an_error(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 0}\n{"ste\n{"step": 2}\n')
  with pytest.raises(ValueError, match='metrics.jsonl:2'):
    files.read_rows(str(path))


def test_atomic_writes_leave_no_temporary_files(tmp_path):
  files.write_json(str(tmp_path / 'a.json'), {'x': 1})
  files.write_npy(str(tmp_path / 'b.npy'), np.arange(3))
  files.write_npz(str(tmp_path / 'c.npz'), y=np.ones(2))
  assert sorted(os.listdir(tmp_path)) == ['a.json', 'b.npy', 'c.npz']
  np.testing.assert_array_equal(np.load(tmp_path / 'b.npy'), np.arange(3))
  with np.load(tmp_path / 'c.npz') as saved:
    np.testing.assert_array_equal(saved['y'], np.ones(2))


def test_failed_write_keeps_the_old_file(tmp_path):
  path = str(tmp_path / 'a.json')
  files.write_json(path, {'x': 1})
  with pytest.raises(TypeError):
    files.write_json(path, {'x': object()})
  assert files.read_json(path) == {'x': 1}
  assert os.listdir(tmp_path) == ['a.json']


# ---------------------------------------------------------------- schedule, data
def test_schedule_is_dense_then_geometric():
  steps = measure.steps(measure.block(dense_until=40, growth=1.15), 2400)
  assert steps[:41] == list(range(41)) and steps[-1] == 2400
  gaps = np.diff(steps[41:])
  assert np.all(gaps >= 1) and gaps[-2] > gaps[0]
  assert len(steps) < 80


def test_batches_cover_each_epoch_once_and_are_reproducible():
  idx = np.concatenate([data.batch_indices(3, s, 7, 30) for s in range(4)])
  assert len(set(idx)) == 28  # 4 batches of 7, the remainder of 2 dropped
  np.testing.assert_array_equal(data.batch_indices(3, 5, 7, 30),
                                data.batch_indices(3, 5, 7, 30))
  assert not np.array_equal(data.batch_indices(3, 4, 7, 30)[:7],
                            data.batch_indices(3, 0, 7, 30))


def test_unknown_data_name_is_rejected():
  with pytest.raises(ValueError, match='config.data.name'):
    data.load('svhn', 0)


# ---------------------------------------------------------------- the loop
def _toy_run(run_dir, total=20, every=4, bad_at=None, on_step=None, sleep=0.0,
             measured=None):
  """w counts the steps; `bad_at` makes w NaN in that step."""
  def step_fn(state, step):
    time.sleep(sleep)
    w = state['w'] + 1.0
    if step == bad_at:
      w = w * jnp.nan
    return {'w': w}, jnp.all(jnp.isfinite(w))

  def measure(state, step):
    if measured is not None:
      measured.append(step)
    return {'w': float(state['w'][0])}

  return loop.run(str(run_dir), state={'w': jnp.zeros(3)}, total_steps=total,
                  train_step=step_fn, measure=measure,
                  measure_steps=set(range(0, total + 1, 5)),
                  checkpoint_every=every, on_step=on_step)


class Crash(Exception):
  pass


def _crash_at(at):
  def on_step(step):
    if step == at:
      raise Crash()
  return on_step


def _steps(run_dir):
  return sorted(int(os.path.basename(p)) for p in
                glob.glob(os.path.join(str(run_dir), 'checkpoints', '[0-9]*')))


def test_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path):
  with pytest.raises(loop.NonFiniteError,
                     match=r'step 13: .*checkpoint \(step 12\) is kept'):
    _toy_run(tmp_path, bad_at=13)
  assert _steps(tmp_path) == [8, 12]  # nothing at 16
  rows = files.read_rows(str(tmp_path / 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [0, 5, 10]  # nothing measured at 15
  # The kept checkpoint is finite, and a healthy rerun resumes from it.
  measured = []
  rows = _toy_run(tmp_path, measured=measured)
  assert measured[0] == 15 and rows[-1] == {**rows[-1], 'step': 20, 'w': 20.0}


@pytest.mark.parametrize('damage', ['truncated_data', 'empty_metadata',
                                    'empty_manifest'])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog,
                                                              damage):
  with pytest.raises(Crash):
    _toy_run(tmp_path, on_step=_crash_at(19))
  assert _steps(tmp_path) == [12, 16]
  newest = tmp_path / 'checkpoints' / '16' / 'default'
  if damage == 'truncated_data':
    for path in glob.glob(str(newest / '**' / 'd' / '*'), recursive=True):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  else:
    name = '_METADATA' if damage == 'empty_metadata' else 'manifest.ocdbt'
    (newest / name).write_bytes(b'')
  measured = []
  with caplog.at_level(logging.WARNING):
    rows = _toy_run(tmp_path, measured=measured)
  assert 'Checkpoint 16' in caplog.text and 'cannot be restored' in caplog.text
  assert measured[0] == 15  # resumed from step 12
  assert [r['step'] for r in rows] == [0, 5, 10, 15, 20]
  assert rows[-1]['w'] == 20.0
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '16')
  assert _steps(tmp_path) == [16, 20]  # 16 saved again, good this time


def test_partial_metrics_line_does_not_block_the_restart(tmp_path):
  with pytest.raises(Crash):
    _toy_run(tmp_path, on_step=_crash_at(11))
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 11, "w"')
  rows = _toy_run(tmp_path)
  assert [r['step'] for r in rows] == [0, 5, 10, 15, 20]
  assert [r['step'] for r in files.read_rows(str(tmp_path / 'metrics.jsonl'))
          ] == [0, 5, 10, 15, 20]


def test_seconds_count_the_whole_run_across_restarts(tmp_path):
  with pytest.raises(Crash):
    _toy_run(tmp_path, on_step=_crash_at(11), sleep=0.05)
  rows = _toy_run(tmp_path, sleep=0.05)
  seconds = [r['seconds'] for r in rows]
  assert seconds == sorted(seconds), seconds
  # 20 steps of >= 50 ms were trained in the final state's history.
  assert seconds[-1] >= 20 * 0.05


# ---------------------------------------------------------------- config guard
def _config(lr=0.1):
  return ml_collections.ConfigDict(dict(
      seed=0, train=dict(learning_rate=lr, epochs=3), allow_config_change=False))


def test_flatten_and_differences_use_dotted_names():
  assert run_config.flatten({'a': {'b': 1}, 'c': 2}) == {'a.b': 1, 'c': 2}
  assert run_config.differences(
      {'train': {'lr': 0.1}, 'seed': 0, 'allow_config_change': False},
      {'train': {'lr': 0.5}, 'seed': 0, 'allow_config_change': True}) == [
          'train.lr: 0.1 -> 0.5']


def test_changed_config_is_refused_and_config_json_kept(tmp_path):
  run_config.check_and_save(_config(), str(tmp_path))
  saved = (tmp_path / 'config.json').read_text()
  run_config.check_and_save(_config(), str(tmp_path))  # same: fine
  changed = _config(lr=0.5)
  changed.seed = 3
  with pytest.raises(ValueError) as e:
    run_config.check_and_save(changed, str(tmp_path))
  message = str(e.value)
  assert 'train.learning_rate: 0.1 -> 0.5' in message
  assert 'seed: 0 -> 3' in message
  assert '--config.allow_config_change=True' in message
  assert (tmp_path / 'config.json').read_text() == saved
  changed.allow_config_change = True
  run_config.check_and_save(changed, str(tmp_path))
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == 3
