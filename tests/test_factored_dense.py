"""Factored per-example gradients (Dense kernels as outer products)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import coherence_jax as cj
from coherence_jax import aggregators
from coherence_jax.aggregators import factored_dense as dpe
from coherence_jax.aggregators import order_stats
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
  monkeypatch.setattr(order_stats, 'MAX_UNROLLED_ROWS', 8)  # streamed blocks
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
