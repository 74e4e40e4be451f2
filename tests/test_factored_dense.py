"""Factored per-example gradients (Dense kernels as outer products)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import coherence_jax as cj
from coherence_jax import aggregators
from coherence_jax.aggregators import order_stats
from coherence_jax.per_example import factored_dense as dpe
from coherence_jax.per_example import vmap_grads
from flax import nnx
from tests import helpers

RTOL, ATOL = 1e-5, 1e-6


def tiny_cnn():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs)
      self.dense = nnx.Linear(4 * 4 * 3, 5, rngs=rngs)
      self.out = nnx.Linear(5, 3, use_bias=False, rngs=rngs)

    def __call__(self, x):
      x = jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1)
      return self.out(jnp.tanh(self.dense(x)))
  return cj.from_nnx(Net(nnx.Rngs(0)), cj.models.cross_entropy_loss)


def cnn_batch(b):
  k1, k2 = jax.random.split(jax.random.key(3))
  return {'image': jax.random.normal(k1, (b, 4, 4, 1)),
          'label': jax.random.randint(k2, (b,), 0, 3)}


@pytest.mark.parametrize('model', [  # the cnn's conv leaves: slow tier
    'mlp', pytest.param('cnn', marks=pytest.mark.slow)])
def test_factored_grads_equal_per_example_grads(model):
  if model == 'mlp':
    (loss_fn, params), batch = helpers.tiny_mlp(), helpers.tiny_batch(7)
  else:
    (loss_fn, params), batch = tiny_cnn(), cnn_batch(7)
  ref = cj.per_example_grads(loss_fn, params, batch)
  fact = jax.jit(lambda p, b: dpe.factored_grads(loss_fn, p, b))(params, batch)
  kinds = jax.tree.leaves(jax.tree.map(dpe.is_outer, fact, is_leaf=dpe.is_outer))
  assert any(kinds)  # the Dense kernels are factored
  got = jax.jit(dpe.materialize_grads)(fact)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               got, ref)
  # c = 2 of 7 rows: every coordinate is clipped / trimmed at both ends.
  txs = (aggregators.winsorized_mean(2), aggregators.trimmed_mean(2))
  updates = jax.jit(lambda g: [tx.update(g, tx.init(params), params)[0]
                               for tx in txs])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               updates(fact), updates(ref))


def test_outer_rows_long_input_and_group_means(monkeypatch):
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 8)  # streamed
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(30, 4)), jnp.float32)
  d = jnp.asarray(rng.normal(size=(30, 3)), jnp.float32)
  rows = dpe.OuterRows(a, d)
  full = np.asarray(rows.materialize())
  s = np.sort(full, 0)
  want = np.clip(full, s[2], s[-3]).mean(0)
  np.testing.assert_allclose(order_stats.winsorized_mean(rows, 2), want, RTOL,
                             ATOL)
  np.testing.assert_allclose(order_stats.group_means(rows, 3),
                             full.reshape(3, 10, 4, 3).mean(1), RTOL, ATOL)
  np.testing.assert_allclose(order_stats.mean(rows), full.mean(0), RTOL, ATOL)


def test_non_nnx_loss_falls_back_to_plain_per_example_grads():
  loss_fn = lambda w, b: (b['x'] @ w) ** 2
  batch = {'x': jnp.ones((5, 3))}
  got = dpe.materialize_grads(
      dpe.factored_grads(loss_fn, jnp.arange(3.0), batch))
  np.testing.assert_allclose(got, 2 * 3.0 * np.ones((5, 3)), RTOL, ATOL)


def test_shared_linear_is_not_factored():
  class Shared(nnx.Module):
    def __init__(self, rngs):
      self.lin = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
      return self.lin(jnp.tanh(self.lin(x)))  # called twice
  loss_fn, params = cj.from_nnx(Shared(nnx.Rngs(0)), cj.models.cross_entropy_loss)
  batch = helpers.tiny_batch(4, dim=3)
  fact = dpe.factored_grads(loss_fn, params, batch)
  assert not any(jax.tree.leaves(jax.tree.map(dpe.is_outer, fact,
                                              is_leaf=dpe.is_outer)))
  ref = vmap_grads.per_example_grads(loss_fn, params, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               fact, ref)


def test_batch_sharded_over_an_explicit_mesh_axis():
  """The zero perturbation takes the batch's sharding (no vmap axis error)."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top,g-multiple-import
  (loss_fn, params), batch = helpers.tiny_mlp(), helpers.tiny_batch(8)
  mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Explicit,))
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  fn = jax.jit(lambda p, b: dpe.materialize_grads(
      dpe.factored_grads(loss_fn, p, b)))
  with jax.set_mesh(mesh):
    got = fn(params, sharded)
  # Same per-example math on a 1-row shard vs the whole batch: float32
  # rounding of a few short dot products.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               got, fn(params, batch))


@pytest.mark.parametrize('conv_kwargs,in_shape', [
    ({'strides': 2, 'padding': 'VALID'}, (6, 5, 2)),
    ({'kernel_dilation': 2, 'padding': ((1, 0), (2, 1))}, (5, 6, 2)),
    ({'kernel_size': (3,), 'padding': 'SAME'}, (7, 2)),          # 1-D
    ({'feature_group_count': 2}, (5, 5, 2)),   # groups: vmap's gradient
])
def test_conv_kernels_from_patches_equal_per_example_grads(conv_kwargs,
                                                            in_shape):
  kwargs = {'kernel_size': (3, 2), **conv_kwargs}

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(2, 4, rngs=rngs, **kwargs)

    def __call__(self, x):
      h = jnp.tanh(self.conv(x))
      return h.reshape(x.shape[0], -1)[:, :3] * 3.0

  loss_fn, params = cj.from_nnx(Net(nnx.Rngs(0)), cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(5))
  batch = {'image': jax.random.normal(k1, (5,) + in_shape),
           'label': jax.random.randint(k2, (5,), 0, 3)}
  got = jax.jit(lambda p, b: dpe.factored_grads(loss_fn, p, b))(params, batch)
  want = helpers.loop_grads(loss_fn, params, batch)
  # Each kernel entry sums at most 6 * 5 products of O(1) float32 values:
  # ~1e-6 relative to the largest entry, 1e-5 leaves room for the order.
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5,
                               atol=1e-5 * float(np.abs(w).max()))
