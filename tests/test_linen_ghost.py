"""Ghost norms of linen models used as users use them: `model.apply` in a
plain loss function, found by `flax.linen.intercept_methods`.

Compared with per-example vmap gradients: float32, rtol 1e-4 plus an
absolute floor of 1e-6 × the largest norm of any leaf, 1e-5 × the largest
|S| entry for S (the attention key bias has a gradient that is zero in exact
arithmetic, ~1e-8 in float32: only its absolute error is meaningful); the two paths sum ≤ 100 products in
different orders (~√n·EPS32 ≲ 1e-5 relative).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import coherence_jax as cj
from benchmarks.brought_models import LinenLM
from benchmarks.brought_models import LinenResNet
from benchmarks.brought_models import linen_classifier_loss
from benchmarks.brought_models import linen_lm_loss


def assert_matches_vmap(loss_fn, params, batch):
  def both(p, b):  # one compiled program
    return [(cj.per_example_sq_norms(loss_fn, p, b, method=m),
             cj.coherence_stats(loss_fn, p, b, method=m))
            for m in ('ghost', 'vmap')]
  (got, stats), (want, ref) = jax.jit(both)(params, batch)
  floor = 1e-6 * max(float(jnp.max(w)) for w in jax.tree.leaves(want))
  jax.tree_util.tree_map_with_path(
      lambda path, g, w: np.testing.assert_allclose(
          g, w, rtol=1e-4, atol=floor, err_msg=jax.tree_util.keystr(path)),
      got, want)
  np.testing.assert_allclose(stats.m_coherence(), ref.m_coherence(),
                             rtol=1e-4)
  s_floor = 1e-5 * max(float(jnp.max(jnp.abs(r)))
                       for r in jax.tree.leaves(ref.sum_grads))
  jax.tree.map(lambda s, r: np.testing.assert_allclose(
      s, r, rtol=1e-4, atol=s_floor), stats.sum_grads, ref.sum_grads)


def test_linen_transformer_lm_is_all_ghost():
  """lm1b's layout: Embed, MultiHeadDotProductAttention (DenseGeneral),
  LayerNorm, Dense; positions looked up per example."""
  model = LinenLM(layers=1)
  params = model.init(jax.random.key(0), jnp.ones((1, 6), jnp.int32))['params']
  loss_fn = linen_lm_loss(model)
  batch = {'tokens': jax.random.randint(jax.random.key(1), (4, 7), 1, 13)}
  paths = cj.norm_paths(loss_fn, params, batch, method='ghost')
  assert 'vmap' not in paths.values(), paths
  assert paths['LinenBlock_0/MultiHeadDotProductAttention_0/query/kernel'] == (
      'ghost:gram')
  assert_matches_vmap(loss_fn, params, batch)


@pytest.mark.parametrize('norm', [
    pytest.param('group', marks=pytest.mark.slow), 'batch'])
def test_linen_resnet_with_group_or_inference_batch_norm(norm):
  model = LinenResNet(widths=(4, 8), classes=3, norm=norm)
  variables = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
  others = {k: v for k, v in variables.items() if k != 'params'}
  loss_fn = linen_classifier_loss(model, others)

  batch = {'x': jax.random.normal(jax.random.key(2), (4, 8, 8, 3)),
           'y': jnp.arange(4) % 3}
  assert 'vmap' not in cj.norm_paths(loss_fn, variables['params'],
                                     batch).values()
  assert_matches_vmap(loss_fn, variables['params'], batch)


class Boxed(nn.Module):
  """Logically partitioned params (nn.with_logical_partitioning) and a
  module of one's own holding a param (per-module fallback)."""

  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(3, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ('embed', 'mlp')))
    return Temperature()(jnp.tanh(dense(x)))


class Temperature(nn.Module):

  @nn.compact
  def __call__(self, x):
    t = self.param('t', lambda k: jnp.full((3,), 1.5))
    return x / t + jnp.sin(t)


def test_boxed_params_and_own_modules():
  model = Boxed()
  params = model.init(jax.random.key(0), jnp.ones((1, 4)))['params']
  unboxed = nn.meta.unbox(params)

  def loss_fn(p, batch):
    return jnp.sum(jnp.sin(model.apply({'params': p}, batch['x'])) ** 2, -1)

  batch = {'x': jax.random.normal(jax.random.key(1), (5, 4))}
  for p in (params, unboxed):  # as init returns them, and unboxed
    paths = cj.norm_paths(loss_fn, p, batch, method='ghost')
    assert paths == {'Dense_0/bias': 'ghost:materialize',
                     'Dense_0/kernel': 'ghost:outer',
                     'Temperature_0/t': 'ghost:module'}
  assert_matches_vmap(loss_fn, unboxed, batch)
  got = cj.coherence_stats(loss_fn, params, batch, method='ghost')
  want = cj.coherence_stats(loss_fn, unboxed, batch, method='vmap')
  np.testing.assert_allclose(got.m_coherence(), want.m_coherence(), rtol=1e-5)


def test_a_plain_loss_without_layers():
  loss_fn = lambda w, b: jnp.tanh(b['x'] @ w) ** 2
  w, batch = jnp.linspace(-1.0, 1.0, 3), {'x': jnp.ones((4, 3))}
  assert cj.norm_paths(loss_fn, w, batch) == {'<root>': 'vmap'}
  with pytest.raises(ValueError, match='found no flax layer'):
    cj.per_example_sq_norms(loss_fn, w, batch, method='ghost')


def test_linen_model_wrapped_by_nnx_bridge_to_nnx():
  """from_nnx(nnx.bridge.ToNNX(linen model)): runs under jit (the bridge's
  RNG counter is mutated inside the trace) and its linen layers are found."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from flax.nnx import bridge  # pylint: disable=g-import-not-at-top

  model = bridge.ToNNX(LinenResNet(widths=(4,), classes=3), rngs=nnx.Rngs(0))
  bridge.lazy_init(model, jnp.ones((1, 8, 8, 3)))

  def loss(module, batch):
    logp = jax.nn.log_softmax(module(batch['x']))
    return -jnp.take_along_axis(logp, batch['y'][:, None], -1)[:, 0]

  loss_fn, params = cj.from_nnx(model, loss)
  batch = {'x': jax.random.normal(jax.random.key(2), (4, 8, 8, 3)),
           'y': jnp.arange(4) % 3}
  assert 'vmap' not in cj.norm_paths(loss_fn, params, batch).values()
  assert_matches_vmap(loss_fn, params, batch)
