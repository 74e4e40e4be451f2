"""coherence_stats inside jax.shard_map and jax.pmap equals one device."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from tests import helpers

RTOL = 1e-5


def assert_same_stats(got, want):
  assert int(got.count) == int(want.count)
  np.testing.assert_allclose(got.m_coherence(), want.m_coherence(), rtol=RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL,
                                                       atol=1e-6),
               (got.sum_grads, got.sq_norms()),
               (want.sum_grads, want.sq_norms()))


def test_eight_devices_are_simulated():
  assert jax.device_count() == 8


def test_shard_map_equals_one_device():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(8 * 5)
  want = cj.coherence_stats(loss_fn, params, batch)
  mesh = jax.make_mesh((8,), ('data',))
  sharded_batch = jax.device_put(batch, NamedSharding(mesh, P('data')))
  fn = jax.jit(jax.shard_map(
      lambda p, b: cj.coherence_stats(loss_fn, p, b, axis_name='data',
                                      microbatch_size=2),
      mesh=mesh, in_specs=(P(), P('data')), out_specs=P()))
  assert_same_stats(fn(params, sharded_batch), want)


def test_pmap_equals_one_device():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(8 * 3)
  want = cj.coherence_stats(loss_fn, params, batch)
  per_device = jax.tree.map(lambda x: x.reshape((8, 3) + x.shape[1:]), batch)
  out = jax.pmap(lambda p, b: cj.coherence_stats(loss_fn, p, b, axis_name='i'),
                 axis_name='i', in_axes=(None, 0))(params, per_device)
  for device in range(8):
    assert_same_stats(jax.tree.map(lambda x: x[device], out), want)


def test_two_dimensional_mesh_over_both_axes():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(16)
  want = cj.coherence_stats(loss_fn, params, batch)
  mesh = jax.make_mesh((2, 4), ('host', 'data'))
  fn = jax.jit(jax.shard_map(
      lambda p, b: cj.coherence_stats(loss_fn, p, b,
                                      axis_name=('host', 'data')),
      mesh=mesh, in_specs=(P(), P(('host', 'data'))), out_specs=P()))
  sharded = jax.device_put(batch, NamedSharding(mesh, P(('host', 'data'))))
  assert_same_stats(fn(params, sharded), want)


def _shard_mapped(fn, mesh, batch):
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P('data')),
                               out_specs=P()))


SHARDED_FUNCTIONS = {
    'coherence_stats/vmap': lambda loss_fn, p, b, **kw: cj.coherence_stats(
        loss_fn, p, b, method='vmap', **kw).m_coherence(),
    'coherence_stats/auto': lambda loss_fn, p, b, **kw: cj.coherence_stats(
        loss_fn, p, b, **kw).m_coherence(),
    'per_example_grads': lambda loss_fn, p, b, **kw: jax.tree.leaves(
        cj.per_example_grads(loss_fn, p, b, **kw))[0].sum(),
    'per_group_grads': lambda loss_fn, p, b, **kw: jax.tree.leaves(
        cj.per_group_grads(loss_fn, p, b, 1, **kw))[0].sum(),
    'per_example_sq_norms': lambda loss_fn, p, b, **kw: jax.tree.leaves(
        cj.per_example_sq_norms(loss_fn, p, b, **kw))[0].sum(),
}


@pytest.mark.parametrize('name', sorted(SHARDED_FUNCTIONS))
def test_sharded_batch_without_axis_name_is_an_error(name):
  """Without axis_name the grads would come back summed over devices."""
  loss_fn, params = helpers.tiny_mlp()
  mesh = jax.make_mesh((2,), ('data',))
  batch = jax.device_put(helpers.tiny_batch(4), NamedSharding(mesh, P('data')))
  fn = SHARDED_FUNCTIONS[name]
  with pytest.raises(ValueError, match="axis_name='data'"):
    _shard_mapped(lambda p, b: fn(loss_fn, p, b), mesh, batch)(params, batch)


def test_wrong_axis_name_lists_the_mesh_axes():
  loss_fn, params = helpers.tiny_mlp()
  mesh = jax.make_mesh((2,), ('data',))
  batch = jax.device_put(helpers.tiny_batch(4), NamedSharding(mesh, P('data')))
  with pytest.raises(ValueError, match=r"'batch' is not an axis.*data"):
    _shard_mapped(
        lambda p, b: cj.coherence_stats(loss_fn, p, b, axis_name='batch').count,
        mesh, batch)(params, batch)


def test_batch_sharded_over_more_axes_than_axis_name_is_an_error():
  loss_fn, params = helpers.tiny_mlp()
  mesh = jax.make_mesh((2, 4), ('host', 'data'))
  batch = jax.device_put(helpers.tiny_batch(16),
                         NamedSharding(mesh, P(('host', 'data'))))
  fn = jax.jit(jax.shard_map(
      lambda p, b: cj.coherence_stats(loss_fn, p, b, axis_name='data').count,
      mesh=mesh, in_specs=(P(), P(('host', 'data'))), out_specs=P()))
  with pytest.raises(ValueError, match="'host'"):
    fn(params, batch)


def test_per_example_grads_with_axis_name_are_local():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(8)
  want = cj.per_example_grads(loss_fn, params, batch)
  mesh = jax.make_mesh((8,), ('data',))
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  got = jax.jit(jax.shard_map(
      lambda p, b: cj.per_example_grads(loss_fn, p, b, axis_name='data'),
      mesh=mesh, in_specs=(P(), P('data')), out_specs=P('data')))(params,
                                                                  sharded)
  # Same per-example computation on each device: float32 rounding only.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), got, want)
