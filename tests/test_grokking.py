"""The grokking experiment: its data split, summary and config checks (fast),
and a tiny-tiny run end to end (slow): the numbers it writes, crash and resume,
a finished run, a changed config, and its main."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from coherence_jax import schedules
from experiments.common import files
from experiments.grokking import data
from experiments.grokking import report
from experiments.grokking import train
from experiments.grokking.configs import default
from experiments.grokking.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {'embed', 'pos_embed', 'blocks/0/attn_norm', 'blocks/0/attn/query',
           'blocks/0/attn/key', 'blocks/0/attn/value', 'blocks/0/attn/out',
           'blocks/0/mlp_norm', 'blocks/0/mlp_in', 'blocks/0/mlp_out',
           'final_norm', 'head'}


class Crash(Exception):
  pass


def _never(step):
  raise AssertionError(f'a finished run trained again (step {step})')


def _tiny_tiny():
  """A test-only config: p = 11, d_model 16, 40 steps, 16-pair samples."""
  config = tiny.get_config()
  config.data.modulus = 11
  config.model.d_model = 16
  config.model.num_heads = 2
  config.train.steps = 40
  config.train.checkpoint_every = 10
  config.measure.sample_size = 16
  config.measure.held_out_sample_size = 16
  config.measure.microbatch_size = 8
  config.measure.dense_until = 4
  config.measure.growth = 1.5
  return config


# ------------------------------------------------------------------ fast
def test_split_covers_every_pair_once_with_its_sum():
  split = data.modular_addition(7, train_fraction=0.4, seed=3)
  train, test = split['train'], split['test']
  assert train['tokens'].shape == (20, 3) and test['tokens'].shape == (29, 3)
  tokens = np.concatenate([train['tokens'], test['tokens']])
  labels = np.concatenate([train['label'], test['label']])
  assert sorted(map(tuple, tokens[:, :2].tolist())) == [
      (a, b) for a in range(7) for b in range(7)]
  assert np.all(tokens[:, 2] == 7)                      # '=' is token p
  np.testing.assert_array_equal(labels, (tokens[:, 0] + tokens[:, 1]) % 7)
  again = data.modular_addition(7, 0.4, seed=3)
  np.testing.assert_array_equal(again['train']['tokens'], train['tokens'])
  other = data.modular_addition(7, 0.4, seed=4)
  assert not np.array_equal(other['train']['tokens'], train['tokens'])


@pytest.mark.parametrize('modulus,fraction,match', [
    (1, 0.5, 'modulus: got 1'), (5, 0.0, 'train_fraction: got 0.0'),
    (5, 0.99, 'train_fraction: got 0.99')])
def test_split_rejects_a_bad_modulus_or_fraction(modulus, fraction, match):
  with pytest.raises(ValueError, match=match):
    data.modular_addition(modulus, fraction, seed=0)


def _rows(train_acc, test_acc, rng):
  rows = []
  for step, (a, b) in enumerate(zip(train_acc, test_acc)):
    row = {'step': step * 10, 'seconds': float(step), 'train_accuracy': a,
           'test_accuracy': b, 'train_loss': 1.0, 'test_loss': 2.0,
           'param_norm': 3.0}
    for sample in report.SAMPLES:
      s2, q = rng.uniform(0.1, 2.0, (2, len(MODULES)))
      row[f'{sample}_m_coherence'] = float(s2.sum() / q.sum())
      row[f'{sample}_modules'] = {
          name: {'m_coherence': float(s2[i] / q[i]),
                 'share': float(q[i] / q.sum())}
          for i, name in enumerate(sorted(MODULES))}
      row[f'_{sample}_sums'] = dict(zip(sorted(MODULES), zip(s2, q)))
    rows.append(row)
  return rows


def test_summary_events_phases_and_exact_group_coherence():
  rng = np.random.default_rng(0)
  rows = _rows([0.1, 0.5, 0.995, 1.0, 1.0, 1.0, 1.0],
               [0.0, 0.96, 0.0, 0.2, 0.97, 0.99, 1.0], rng)
  summary = report.summarize(rows)
  # Held-out 0.96 at step 10 comes before memorization: it does not count.
  assert summary['memorization_step'] == 20
  assert summary['grokking_step'] == 40
  phases = summary['phases']
  assert [(p, e['first_step'], e['last_step'], e['measurements'])
          for p, e in phases.items()] == [('memorizing', 0, 10, 2),
                                          ('memorized', 20, 30, 2),
                                          ('generalized', 40, 60, 3)]
  assert phases['generalized']['test_accuracy'] == 0.99
  np.testing.assert_allclose(
      phases['memorized']['heldout_m_coherence'],
      np.median([r['heldout_m_coherence'] for r in rows[2:4]]))
  # Group m-coherence from modules' (m_l, share_l) is Σ‖S_l‖² / Σ Q_l.
  sums = rows[0]['_train_sums']
  groups = report.group_m_coherence(rows[0]['train_modules'])
  attention = [n for n in MODULES if '/attn/' in n]
  want = (sum(sums[n][0] for n in attention)
          / sum(sums[n][1] for n in attention))
  # A few float64 products and sums: ~1e-15 relative.
  np.testing.assert_allclose(groups['attention'], want, rtol=1e-12)
  assert set(groups) == set(report.GROUPS)
  assert json.loads(json.dumps(summary)) == summary   # JSON-ready


def test_summary_of_a_run_that_never_generalizes_with_a_loss_spike():
  rows = _rows([0.1, 1.0, 0.9, 1.0, 1.0], [0.0, 0.1, 0.2, 0.2, 0.3],
               np.random.default_rng(1))
  summary = report.summarize(rows)
  assert summary['memorization_step'] == 10 and summary['grokking_step'] is None
  assert list(summary['phases']) == ['memorizing', 'memorized']
  # Step 20 lost training pairs again: a spike; 30 and 40 are between.
  assert summary['spikes']['steps'] == [20]
  assert summary['spikes']['train_m_coherence'] == rows[2]['train_m_coherence']
  np.testing.assert_allclose(
      summary['between_spikes']['heldout_m_coherence'],
      np.median([r['heldout_m_coherence'] for r in rows[3:]]))


@pytest.mark.parametrize('module', [default, tiny])
def test_config_files_start_with_their_command(module):
  name = os.path.splitext(os.path.basename(module.__file__))[0]
  first_lines = module.__doc__.strip().splitlines()[:5]
  assert any('python -m experiments.grokking.main' in line
             for line in first_lines)
  assert any(f'--config=experiments/grokking/configs/{name}.py' in line
             for line in first_lines)
  train.validate(module.get_config())


@pytest.mark.parametrize('field,value,match', [
    ('data.modulus', 1, r'config.data.modulus: got 1'),
    ('data.train_fraction', 1.0, r'config.data.train_fraction: got 1.0'),
    ('model.num_heads', 3, r'config.model.num_heads: got 3; pass a divisor'),
    ('train.learning_rate', float('nan'), r'config.train.learning_rate'),
    ('train.b2', 1.0, r'config.train.b2: got 1.0'),
    ('train.batch_size', 0, r'config.train.batch_size: got 0; pass -1'),
    ('measure.held_out_sample_size', 10_000,
     r'config.measure.held_out_sample_size: got 10000; pass 1..1405'),
    ('measure.growth', 1.0, r'config.measure.growth: got 1.0'),
    ('measure.method', 'magic', r'config.measure.method'),
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, field,
                                                          value, match):
  config = tiny.get_config()
  section, name = field.split('.')
  config[section][name] = value
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(workdir), on_step=_never)
  assert not workdir.exists()


# ------------------------------------------------------------------ slow
@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished tiny-tiny run: (config, workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp('grokking'))
  config = _tiny_tiny()
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_tiny_run_writes_consistent_numbers(finished):
  config, workdir, summary = finished
  rows = files.read_rows(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in rows] == schedules.Schedule(
      dense_until=4, growth=1.5, total_steps=40).steps()
  for r in rows:
    for key in ('train_accuracy', 'test_accuracy'):
      assert 0.0 <= r[key] <= 1.0
    for sample in ('train', 'heldout'):
      m_coherence = r[f'{sample}_m_coherence']
      assert math.isfinite(m_coherence) and 0.0 <= m_coherence <= 16
      # m-coherence is m·α on the 16-example sample (float64 report).
      np.testing.assert_allclose(m_coherence, 16 * r[f'{sample}_alpha'],
                                 rtol=1e-12)
      modules = r[f'{sample}_modules']
      assert set(modules) == MODULES
      shares = [e['share'] for e in modules.values()]
      assert all(s >= 0 for s in shares)
      np.testing.assert_allclose(sum(shares), 1.0, rtol=1e-9)
      # Property 4: the whole-network value is the share-weighted mean of
      # the modules' (exact in float64; the report sums float64 values).
      np.testing.assert_allclose(
          sum(e['share'] * e['m_coherence'] for e in modules.values()),
          m_coherence, rtol=1e-9)
      assert r[f'{sample}_mean_sq_grad_norm'] > 0
    assert math.isfinite(r['train_loss']) and math.isfinite(r['test_loss'])
    assert r['param_norm'] > 0
  seconds = [r['seconds'] for r in rows]
  assert seconds == sorted(seconds)
  # Memorization starts: the training loss falls in 40 steps of AdamW.
  assert rows[-1]['train_loss'] < 0.9 * rows[0]['train_loss']
  assert report.summarize(rows) == summary
  assert files.read_json(os.path.join(workdir, 'summary.json')) == summary
  assert files.read_json(os.path.join(workdir, 'config.json')) == json.loads(
      config.to_json_best_effort())
  text = open(os.path.join(workdir, 'report.md')).read()
  assert report.format_summary_table(summary) in text
  assert '![grokking](grokking.png)' in text
  assert os.path.getsize(os.path.join(workdir, 'grokking.png')) > 10_000


@pytest.mark.slow
def test_finished_run_is_not_trained_again(finished):
  config, workdir, summary = finished
  assert train.train_and_evaluate(config, workdir, on_step=_never) == summary


@pytest.mark.slow
def test_finished_workdir_refuses_another_config(finished):
  _, workdir, _ = finished
  changed = _tiny_tiny()
  changed.train.weight_decay = 0.1
  with pytest.raises(ValueError, match=r'train.weight_decay: 1.0 -> 0.1'):
    train.train_and_evaluate(changed, workdir, on_step=_never)


@pytest.mark.slow
def test_crashed_run_resumes_without_losing_or_duplicating_rows(finished,
                                                                tmp_path):
  config, reference_dir, reference = finished

  def crash_at_25(step):
    if step == 25:
      raise Crash()
  workdir = str(tmp_path / 'run')
  with pytest.raises(Crash):
    train.train_and_evaluate(config, workdir, on_step=crash_at_25)
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  resumed = train.train_and_evaluate(config, workdir)
  want = files.read_rows(os.path.join(reference_dir, 'metrics.jsonl'))
  got = files.read_rows(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in got] == [r['step'] for r in want]
  for a, b in zip(got, want):
    # The same programs on the same values: equal up to float32 rounding of
    # the restored state (none: orbax restores the bits).
    np.testing.assert_allclose(a['train_m_coherence'], b['train_m_coherence'],
                               rtol=1e-5)
    assert a['train_accuracy'] == b['train_accuracy']
  assert resumed['final']['train_accuracy'] == reference['final'][
      'train_accuracy']


@pytest.mark.slow
def test_main_runs_the_tiny_config_with_overrides(tmp_path):
  workdir = tmp_path / 'run'
  env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.grokking.main',
       f'--workdir={workdir}',
       f'--config={REPO}/experiments/grokking/configs/tiny.py',
       '--config.data.modulus=7', '--config.model.d_model=8',
       '--config.model.num_heads=2', '--config.train.steps=6',
       '--config.measure.sample_size=8',
       '--config.measure.held_out_sample_size=8'],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = files.read_json(str(workdir / 'summary.json'))
  assert summary['steps'] == 6
  assert files.read_json(str(workdir / 'config.json'))['data']['modulus'] == 7
