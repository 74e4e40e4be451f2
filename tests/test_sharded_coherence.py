"""coherence_stats inside jax.shard_map and jax.pmap equals one device."""

import jax
import numpy as np
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
               (got.sum_grads, got.sum_sq_norms),
               (want.sum_grads, want.sum_sq_norms))


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
