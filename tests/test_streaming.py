"""Streaming robust gradients equal the per-example aggregators.

float32 tolerances: RTOL = 1e-5, ATOL = 1e-6.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import coherence_jax as cj
from coherence_jax import aggregators
from coherence_jax.aggregators import streaming
from coherence_jax.per_example import vmap_grads

RTOL, ATOL = 1e-5, 1e-6


def loss_fn(params, batch):
  h = jnp.tanh(batch['x'] @ params['w1'] + params['b1'])
  return (h @ params['w2'] - batch['y']) ** 2


def setup(b, seed=0):
  rng = np.random.default_rng(seed)
  params = {'w1': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            'b1': jnp.zeros(3),
            'w2': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  x = rng.normal(size=(b, 4)).astype(np.float32)
  y = rng.normal(size=(b,)).astype(np.float32)
  y[0] = 300.0  # an outlier example
  return params, {'x': jnp.asarray(x), 'y': jnp.asarray(y)}


@pytest.mark.parametrize('b,c,m', [(13, 2, 4), (12, 1, 4), (9, 3, 2),
                                   (7, 0, 3), (10, 2, 16)])
def test_streaming_equals_per_example(b, c, m):
  params, batch = setup(b, seed=b)

  @jax.jit
  def both(params, batch):
    grads = vmap_grads.per_example_grads(loss_fn, params, batch)
    out = []
    for agg, stream in ((aggregators.winsorized_mean,
                         streaming.winsorized_mean_grad),
                        (aggregators.trimmed_mean, streaming.trimmed_mean_grad)):
      tx = agg(c)
      out.append((tx.update(grads, tx.init(params), params)[0],
                  stream(loss_fn, params, batch, c=c, microbatch_size=m)))
    return out

  for ref, out in both(params, batch):
    for k in params:
      np.testing.assert_allclose(out[k], ref[k], RTOL, ATOL)


def test_streaming_bad_input():
  params, batch = setup(5)
  with pytest.raises(ValueError, match='2c\\+1'):
    streaming.winsorized_mean_grad(loss_fn, params, batch, c=3,
                                     microbatch_size=2)
  with pytest.raises(ValueError, match='microbatch_size'):
    streaming.trimmed_mean_grad(loss_fn, params, batch, c=1,
                                  microbatch_size=0)
  with pytest.raises(ValueError, match='loss_fn'):
    streaming.trimmed_mean_grad(lambda p, b: jnp.sum(loss_fn(p, b)), params,
                                  batch, c=1, microbatch_size=2)


def np_winsorized(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  return np.clip(s, s[c], s[s.shape[0] - c - 1]).mean(0)


def np_trimmed(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  return s[c:s.shape[0] - c].mean(0)


@pytest.mark.parametrize('m', [
    4,                                     # two streamed passes
    pytest.param(16, marks=pytest.mark.slow)])   # one fused pass (B <= m)
def test_streaming_nnx_model_uses_factored_grads_and_matches(m):
  # An NNX model: Dense kernels reach the order statistics as OuterRows.
  from tests import helpers
  nnx_loss, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(11)
  grads = jax.jit(lambda p, b: vmap_grads.per_example_grads(nnx_loss, p, b))(
      params, batch)

  @jax.jit
  def both(params, batch):
    return [fn(nnx_loss, params, batch, c=2, microbatch_size=m)
            for fn in (streaming.winsorized_mean_grad,
                       streaming.trimmed_mean_grad)]

  wins, trim = both(params, batch)
  jax.tree.map(lambda out, g: np.testing.assert_allclose(
      out, np_winsorized(g, 2), RTOL, ATOL), wins, grads)
  jax.tree.map(lambda out, g: np.testing.assert_allclose(
      out, np_trimmed(g, 2), RTOL, ATOL), trim, grads)


def test_trimmed_mean_grad_constant_middle():
  # Ties at both bounds: two passes (microbatch 4 < B = 10), every example's
  # gradient for the bias is 3, so x_(c+1) == x_(B-c) == 3; it returned 6.75.
  loss = lambda p, b: b['x'] * p['b']
  batch = {'x': jnp.full((10,), 3.0)}
  for fn in (cj.trimmed_mean_grad, cj.winsorized_mean_grad):  # jitted
    for c in (1, 4):
      out = fn(loss, {'b': jnp.zeros(())}, batch, c=c, microbatch_size=4)
      np.testing.assert_array_equal(out['b'], 3.0)
