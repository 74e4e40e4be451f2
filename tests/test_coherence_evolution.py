"""coherence_evolution end to end at a test-only micro size: the m-coherence it
writes against a python loop of jax.grad, the schedule, the noise, the report."""

import os

import jax
import numpy as np
import pytest

from experiments.coherence_evolution import report
from experiments.coherence_evolution import train
from experiments.coherence_evolution.configs import tiny
from experiments.common import data
from experiments.common import files
from experiments.common import nets
from experiments.common import supervised


def micro_config():
  config = tiny.get_config()
  config.noise.levels = (0.0, 1.0)
  config.model.widths = (784, 8, 8, 10)
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.epochs = 1
  config.train.checkpoint_every_epochs = 1
  config.measure.sample_size = 16
  config.measure.microbatch_size = 16
  config.measure.dense_until = 3
  config.measure.growth = 2.0
  config.mesh.data = 1
  return config


pytestmark = pytest.mark.slow  # ~10 s of CPU: two runs, a grad loop


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('coh_evo'))
  config = micro_config()
  return config, workdir, train.train_and_evaluate(config, workdir)


def _reference_m_coherence(config, labels):
  """‖Σ g_i‖² / Σ ‖g_i‖² from one jax.grad per example, whole and per module."""
  dataset = data.load('mnist5k', config.data.split_seed)
  net = nets.make(config.model, (28, 28, 1), 10, config.seed)
  idx = supervised.fixed_sample(config.seed, 4000, config.measure.sample_size)
  grad = jax.jit(jax.grad(lambda p, x, y: net.loss_fn(
      p, {'image': x, 'label': y})[0]))
  grads = [grad(net.params, dataset['train']['image'][i:i + 1],
                labels[i:i + 1]) for i in idx]
  def ratio(select):
    flat = [np.concatenate([np.ravel(x) for x in select(g)]).astype(np.float64)
            for g in grads]
    total = np.sum(flat, axis=0)
    return total @ total / sum(f @ f for f in flat)
  whole = ratio(jax.tree.leaves)
  first = ratio(lambda g: jax.tree.leaves(g['layers'][0]))
  return whole, first


def test_rows_schedule_and_m_coherence_against_a_grad_loop(finished):
  config, workdir, summary = finished
  assert list(summary) == ['noise_0.00', 'noise_1.00']
  with np.load(os.path.join(workdir, 'noise_1.00', 'corruption.npz')) as c:
    noisy = c['label']
    # Uniform relabelling at p = 1: a label stays with probability 1/10.
    assert c['corrupt'].mean() == pytest.approx(0.9, abs=0.02)
  for name in summary:
    rows = files.read_rows(os.path.join(workdir, name, 'metrics.jsonl'))
    # Every step to 3, then 2x apart (6), and the last.
    assert [r['step'] for r in rows] == [0, 1, 2, 3, 6, 8]
    for r in rows:
      assert sum(r['shares'].values()) == pytest.approx(1.0, rel=1e-6)
      # α̂ = (m-coherence - 1) / (m - 1), m = 16: a float64 identity.
      assert r['alpha_unbiased'] == pytest.approx(
          (r['m_coherence'] - 1) / 15, rel=1e-9)
    assert summary[name] == pytest.approx(
        {**report.summarize(rows, 3), 'corrupt_fraction':
         summary[name]['corrupt_fraction']}, nan_ok=True)
  rows = files.read_rows(os.path.join(workdir, 'noise_1.00', 'metrics.jsonl'))
  whole, first = _reference_m_coherence(config, noisy)
  # Step 0: the initial params. Float32 sums of 16 gradients (ghost norms vs
  # materialized gradients): relative rounding ~1e-6, 1e-4 leaves margin.
  assert rows[0]['m_coherence'] == pytest.approx(whole, rel=1e-4)
  assert rows[0]['modules']['layers/0'] == pytest.approx(first, rel=1e-4)


def test_report_and_refusals(finished):
  config, workdir, _ = finished
  text = open(os.path.join(workdir, 'report.md')).read()
  assert '| 100 % noise |' in text and 'first (layers/0)' in text
  assert os.path.getsize(os.path.join(workdir, 'coherence.png')) > 10_000
  bad = micro_config()
  bad.noise.levels = (0.0, 1.5)
  with pytest.raises(ValueError, match=r'config.noise.levels: got \(0.0, 1.5\)'):
    train.train_and_evaluate(bad, workdir + '_bad')
  bad = micro_config()
  bad.model.name = 'resnet7'
  with pytest.raises(ValueError, match="config.model.name: got 'resnet7'; "
                     r"pass one of \('mlp', 'cnn'"):
    train.train_and_evaluate(bad, workdir + '_bad')
