"""coherence_stats inside jax.shard_map and jax.pmap equals one device."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from tests import helpers

# Sharded stats add per-device partial sums (psum) where one device sums the
# whole batch: same terms, other order and kernels. Q of the tiny MLP's 12x8
# kernel sums 40 x 96 squares: ~√n·EPS32 ≈ 7e-6 (worst case n·EPS32 ≈ 5e-4),
# so 1e-4. A lost shard (1/8 of the examples) changes Q by ~12% and S by
# whole examples; a psum counted 8 times, by 8x.
RTOL = 1e-4


def term_magnitudes(loss_fn, params, batch):
  """max_j Σ_i |g_ij| per leaf: the size of the terms summed into S = Σ_i g_i."""
  return jax.tree.map(lambda g: float(np.abs(np.asarray(g)).sum(0).max()),
                      cj.per_example_grads(loss_fn, params, batch))


def assert_same_stats(got, want, magnitudes):
  """Same count, m-coherence, S and Q; S floored by RTOL x `magnitudes`."""
  assert int(got.count) == int(want.count)
  np.testing.assert_allclose(got.m_coherence(), want.m_coherence(), rtol=RTOL)
  # S_j = Σ_i g_ij cancels to near 0 for some j: absolute floor in units of
  # Σ_i |g_ij| (rounding <= 2·B·EPS32 ≈ 1e-5 of it for B = 40, both orders).
  # A lost example moves S by its whole g_i, typically ~1/40 of Σ_i|g_i|.
  jax.tree.map(lambda a, b, m: np.testing.assert_allclose(a, b, rtol=RTOL,
                                                          atol=RTOL * m),
               got.sum_grads, want.sum_grads, magnitudes)
  # Q per leaf is a sum of squares (no cancellation): relative only.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL),
               got.sq_norms(), want.sq_norms())


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
  assert_same_stats(fn(params, sharded_batch), want,
                    term_magnitudes(loss_fn, params, batch))


@pytest.mark.slow  # shard_map is the default path; pmap ~7 s
def test_pmap_equals_one_device():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(8 * 3)
  want = cj.coherence_stats(loss_fn, params, batch)
  per_device = jax.tree.map(lambda x: x.reshape((8, 3) + x.shape[1:]), batch)
  out = jax.pmap(lambda p, b: cj.coherence_stats(loss_fn, p, b, axis_name='i'),
                 axis_name='i', in_axes=(None, 0))(params, per_device)
  magnitudes = term_magnitudes(loss_fn, params, batch)
  for device in range(8):
    assert_same_stats(jax.tree.map(lambda x: x[device], out), want, magnitudes)


@pytest.mark.slow  # 2-D meshes run by default in tests/test_sharding.py
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
  assert_same_stats(fn(params, sharded), want,
                    term_magnitudes(loss_fn, params, batch))


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
  # Same per-example math, batch 1 per device vs batch 8 (other XLA:CPU
  # kernels): dot products of <= 12 terms, ~1e-6 relative; entries that cancel
  # to near 0 get a floor of 1e-5 x the leaf's largest |entry|.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b)))), got, want)
