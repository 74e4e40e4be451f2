"""Data-parallel experiments: 8 simulated devices compute what one device does.

Tolerances. The sharded programs differ from the one-device ones only in the
order of float32 sums (per-device partial sums, then the all-reduce), each
rounding ~1e-7 relative. One SGD step carries that into the params as an
absolute error ~lr·|g|·1e-7; the next steps propagate it through a
Lipschitz map, so after k steps of small-model SGD the params drift ~k·1e-7
relative at most (observed: ~1e-7..1e-6 after 24 steps). Metrics computed
from the params inherit it: m-coherence (a ratio of sums of squared norms
over a 40-example sample) moves ~1e-6 relative, so rtol 1e-4 leaves two
orders of margin while still catching any real error (a wrong all-reduce,
double counting, or a padded example counted is >= 1e-2). Accuracies are
fractions over 4000 / 1000 examples: a drift of 1e-6 cannot flip an argmax
unless two logits tie to 1e-6, so they must agree exactly or within one
example (atol 1/1000 covers one flip on the test set).
"""

import copy

import jax
import ml_collections
import numpy as np
import optax
import pytest

from experiments.common import aggregator_specs
from experiments.common import distributed
from experiments.common import files
from experiments.common import nets
from experiments.common import train_step
from experiments.real_vs_random import train
from experiments.real_vs_random.configs import tiny

SPECS = ('mean', 'winsorized:4', 'trimmed:2', 'median_of_means:5', 'rm3',
         'ra3', 'm3')


def _mlp():
  """The 784-16-10 MLP the experiments build by name (seed 0)."""
  return nets.make(ml_collections.ConfigDict(dict(name='mlp',
                                                  widths=(784, 16, 10))),
                   (28, 28, 1), 10, seed=0)


def _batches(n_steps, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.standard_normal((batch_size, 784)).astype(np.float32),
           'label': rng.integers(0, 10, batch_size).astype(np.int32)}
          for _ in range(n_steps)]


def _train(spec, mesh, batches):
  net = _mlp()
  trainer = train_step.make_trainer(
      *aggregator_specs.build(spec, net.loss_fn, 0.1), mesh=mesh)
  state = trainer.init(net.params)
  for batch in batches:
    state, finite = trainer.step(state, batch)
    assert bool(finite)
  return jax.tree.map(np.asarray, state['params'])


# The default run keeps the padded plain case; the per-example path on a mesh
# runs by default in tests/test_sharding.py (winsorized:1 over 2 processes);
# the rest run under `make test-slow` (each compiles 2 steps).
FAST = {('mean', 45)}
CASES = [case if case in FAST else pytest.param(*case, marks=pytest.mark.slow)
         for case in [(spec, 45) for spec in SPECS] + [('mean', 48),
                                                       ('winsorized:4', 48)]]


@pytest.mark.parametrize('spec,batch_size', CASES)
def test_every_aggregator_steps_the_same_on_8_devices_as_on_1(spec,
                                                               batch_size):
  """B=45 is padded to 48 on 8 devices (zero weight / sliced away); B=48 not."""
  assert jax.device_count() == 8
  batches = _batches(4, batch_size)
  want = _train(spec, None, batches)
  got = _train(spec, distributed.make_mesh(-1), batches)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), got, want)


def test_sharded_state_stays_replicated():
  net = _mlp()
  mesh = distributed.make_mesh(-1)
  trainer = train_step.make_trainer(train_step.mean_grad(net.loss_fn),
                                    optax.sgd(0.1), mesh)
  state, _ = trainer.step(trainer.init(net.params), _batches(1, 45)[0])
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.is_fully_replicated
    assert len(leaf.sharding.device_set) == 8


def test_bad_mesh_is_refused_naming_the_field(tmp_path):
  config = tiny.get_config()
  config.mesh.data = 9
  with pytest.raises(ValueError, match='mesh.data'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def _rows(workdir, mode):
  return files.read_rows(f'{workdir}/{mode}/metrics.jsonl')


def assert_same_rows(got, want, rtol=1e-4):
  """Metric rows equal up to float32 summation order (module docstring)."""
  assert [r['step'] for r in got] == [r['step'] for r in want]
  for g, w in zip(got, want):
    assert g['epoch'] == w['epoch']
    for key in ('m_coherence', 'alpha', 'alpha_unbiased',
                'gradient_diversity'):
      np.testing.assert_allclose(g[key], w[key], rtol=rtol, err_msg=key)
    for name in w['modules']:
      np.testing.assert_allclose(g['modules'][name], w['modules'][name],
                                 rtol=rtol, err_msg=name)
    for key in ('train_accuracy', 'test_accuracy'):
      np.testing.assert_allclose(g[key], w[key], atol=1e-3, err_msg=key)
    # The training batch, measured by the step's own backward pass: the
    # noise scale (m − c)/(c − 1) amplifies c's relative error by c/|c − 1|
    # (inf on both sides where c <= 1).
    if 'batch_loss' not in w:   # the last step: no training batch
      assert 'batch_loss' not in g
      continue
    for key in ('batch_loss', 'batch_m_coherence'):
      np.testing.assert_allclose(g[key], w[key], rtol=rtol, err_msg=key)
    c = w['batch_m_coherence']
    np.testing.assert_allclose(
        g['batch_noise_scale'], w['batch_noise_scale'],
        rtol=rtol * (1 + c / max(abs(c - 1), 1e-3)), err_msg='noise scale')


def test_tiny_real_vs_random_on_8_devices_equals_1_device(tmp_path):
  """The tiny config (B=500: padded to 504 on 8 devices), 24 steps."""
  config = tiny.get_config()
  single = copy.deepcopy(config)
  single.mesh.data = 1
  config.mesh.data = -1
  train.train_and_evaluate(single, str(tmp_path / 'one'))
  train.train_and_evaluate(config, str(tmp_path / 'eight'))
  for mode in config.label_modes:
    want, got = _rows(tmp_path / 'one', mode), _rows(tmp_path / 'eight', mode)
    assert len(want) == 12  # dense_until=8, growth=1.5, 24 steps
    assert_same_rows(got, want)
