"""Robust aggregators across 8 devices equal one device on the global batch.

Inside `jax.shard_map` (batch sharded over 'data', out_specs=P()) and inside
`jax.pmap`, each device passes its local rows; the result must equal the
single-device transform on the concatenated batch (device d holds rows
d*b .. (d+1)*b - 1).

Tolerance: the two sides add the same float32 values in different orders
(a psum of 8 partial sums against one pass over the B rows). The rounding
error of a float32 sum of B values is at most about B * eps32 * max|x|, and
both sides divide by the same count, so per coordinate we allow
2 * B * eps32 * max|finite x| (2: both sides round). NaN and +-inf must
match exactly.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coherence_jax import aggregators
from coherence_jax.aggregators import OuterRows
from coherence_jax.aggregators import across_devices
from coherence_jax.aggregators import order_stats
from coherence_jax.aggregators import streaming
from coherence_jax.per_example import factored_dense
from tests import helpers

EPS32 = float(np.finfo(np.float32).eps)
D = 8      # simulated devices (tests/conftest.py)
B = 24     # global batch: 3 rows per device, so c = 3 has B_local < c + 1
PARAMS = {'w': jnp.zeros((3, 2)), 'b': jnp.zeros((2,))}
SLOW = pytest.mark.slow


def mesh():
  return jax.make_mesh((D,), ('data',))


def updates():
  """Per-example updates [B, ...] with every hard case in some coordinate."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(B, 3, 2)).astype(np.float32)
  b = np.ones((B, 2), np.float32)                    # b[:, 0]: constant
  b[:, 1] = rng.integers(0, 3, size=B)               # ties at both bounds
  w[0:3, 0, 0] = [1e3, 2e3, 3e3]   # the 3 largest all on device 0
  w[21:24, 0, 1] = -5e2            # the 3 smallest (tied) all on device 7
  w[10] = np.inf                   # a +inf row: clipped / trimmed for c >= 1
  w[13, 2, :] = -np.inf            # -inf values
  w[7, 1, 1] = np.nan              # NaN: that coordinate only is NaN
  return {'w': w, 'b': b}


def tolerance(x):
  """Per-coordinate atol for a sum of the leading axis (module docstring)."""
  x = np.asarray(x, np.float64)
  finite = np.where(np.isfinite(x), np.abs(x), 0.0)
  return 2 * x.shape[0] * EPS32 * finite.max(axis=0)


def assert_matches(out, ref, rows):
  for k in ref:
    out_k, ref_k = np.asarray(out[k]), np.asarray(ref[k])
    assert out_k.shape == ref_k.shape, k
    np.testing.assert_array_equal(np.isnan(out_k), np.isnan(ref_k), err_msg=k)
    np.testing.assert_array_equal(np.isinf(out_k) * np.sign(out_k),
                                  np.isinf(ref_k) * np.sign(ref_k), err_msg=k)
    finite = np.isfinite(ref_k)
    err = np.abs(np.where(finite, out_k, 0) - np.where(finite, ref_k, 0))
    assert np.all(err <= tolerance(rows[k])), (k, err.max())


def single(tx, g):
  return jax.jit(lambda u: tx.update(u, tx.init(PARAMS))[0])(g)


def sharded(tx, g):
  m = mesh()
  g = jax.device_put(g, NamedSharding(m, P('data')))
  step = jax.shard_map(lambda u: tx.update(u, tx.init(PARAMS))[0], mesh=m,
                       in_specs=(P('data'),), out_specs=P())
  return jax.jit(step)(g)


def pmapped(tx, g):
  local = jax.tree.map(lambda x: x.reshape((D, -1) + x.shape[1:]), g)
  out = jax.pmap(lambda u: tx.update(u, tx.init(PARAMS))[0],
                 axis_name='i')(local)
  for k in out:  # every device holds the same (global) answer
    np.testing.assert_array_equal(out[k], np.broadcast_to(out[k][:1],
                                                          out[k].shape))
  return jax.tree.map(lambda x: x[0], out)


# The default tier runs one case of each path; the slow tier the others.
CASES = [
    pytest.param('winsorized_mean', 1, marks=SLOW), ('winsorized_mean', 3),
    pytest.param('winsorized_mean', 11, marks=SLOW),
    pytest.param('trimmed_mean', 1, marks=SLOW),
    pytest.param('trimmed_mean', 3, marks=SLOW), ('trimmed_mean', 11),
    ('median_of_means', 1),   # the mean: one psum
    pytest.param('median_of_means', 4, marks=SLOW),  # m = 6: groups span 2
    ('median_of_means', 6),   # m = 4, b = 3: groups straddle devices
    pytest.param('median_of_means', 8, marks=SLOW),  # one group per device
]


@pytest.mark.parametrize('name,arg', CASES)
def test_shard_map_equals_one_device(name, arg):
  g = updates()
  ref = single(getattr(aggregators, name)(arg), g)
  out = sharded(getattr(aggregators, name)(arg, axis_name='data'), g)
  assert_matches(out, ref, g)
  if name == 'winsorized_mean' and arg >= 1:
    assert np.isfinite(ref['w'][0, 0]) and np.isnan(ref['w'][1, 1])


def test_coordinate_median_shard_map_and_pmap():
  g = updates()
  ref = single(aggregators.coordinate_median(), g)
  assert_matches(sharded(aggregators.coordinate_median('data'), g), ref, g)
  assert_matches(pmapped(aggregators.coordinate_median('i'), g), ref, g)


@pytest.mark.parametrize('name,arg', [
    pytest.param('winsorized_mean', 3, marks=SLOW), ('trimmed_mean', 3),
    pytest.param('median_of_means', 6, marks=SLOW)])
def test_pmap_equals_one_device(name, arg):
  g = updates()
  ref = single(getattr(aggregators, name)(arg), g)
  assert_matches(pmapped(getattr(aggregators, name)(arg, axis_name='i'), g),
                 ref, g)


def test_factored_rows_across_devices():
  """OuterRows (factored Dense kernel rows) are summarized / gathered as is."""
  rng = np.random.default_rng(1)
  a = rng.normal(size=(B, 3)).astype(np.float32)
  d = rng.normal(size=(B, 2)).astype(np.float32)
  d[4] = 50.0
  params = {'k': jnp.zeros((3, 2))}
  rows = {'k': a[:, :, None] * d[:, None, :]}
  m = mesh()
  lazy = jax.device_put({'k': OuterRows(jnp.asarray(a), jnp.asarray(d))},
                        NamedSharding(m, P('data')))
  for make, arg in ((aggregators.trimmed_mean, (3,)),
                    (aggregators.coordinate_median, ())):
    tx, tx_d = make(*arg), make(*arg, axis_name='data')
    ref = jax.jit(lambda u, t=tx: t.update(u, t.init(params))[0])(rows)
    out = jax.jit(jax.shard_map(
        lambda u, t=tx_d: t.update(u, t.init(params))[0], mesh=m,
        in_specs=(P('data'),), out_specs=P()))(lazy)
    assert_matches(out, ref, rows)


def test_bad_axis_and_batch_errors():
  g = updates()
  with pytest.raises(ValueError, match='axis_name'):
    aggregators.winsorized_mean(1, axis_name=3)
  with pytest.raises(ValueError, match="'model' is not an axis"):
    sharded(aggregators.trimmed_mean(1, axis_name='model'), g)
  with pytest.raises(ValueError, match='not an axis'):   # outside shard_map
    single(aggregators.coordinate_median(axis_name='data'), g)
  # 2c+1 = 25 > B = 24: the error names the global B and the devices.
  with pytest.raises(ValueError, match=r'B=24 \(3 per device x 8 devices'):
    sharded(aggregators.winsorized_mean(12, axis_name='data'), g)
  with pytest.raises(ValueError, match='does not divide B=24'):
    sharded(aggregators.median_of_means(5, axis_name='data'), g)


# Streaming gradients: a small MLP whose per-example gradients include an
# outlier example (as tests/test_streaming.py).
def loss_fn(params, batch):
  h = jnp.tanh(batch['x'] @ params['w1'] + params['b1'])
  return (h @ params['w2'] - batch['y']) ** 2


def mlp_setup(b):
  rng = np.random.default_rng(b)
  params = {'w1': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            'b1': jnp.zeros(3),
            'w2': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  x = rng.normal(size=(b, 4)).astype(np.float32)
  y = rng.normal(size=(b,)).astype(np.float32)
  y[0:3] = 300.0  # outlier examples, all on device 0
  return params, {'x': jnp.asarray(x), 'y': jnp.asarray(y)}


@pytest.mark.parametrize('fn,c,microbatch_size', [
    ('winsorized_mean_grad', 3, 4),   # 6 rows per device: scan + remainder
    pytest.param('winsorized_mean_grad', 0, 4, marks=SLOW),  # one psum
    pytest.param('trimmed_mean_grad', 3, 4, marks=SLOW),
    ('trimmed_mean_grad', 2, 8),      # one pass per device
])
def test_streaming_grads_across_devices(fn, c, microbatch_size):
  params, batch = mlp_setup(6 * D)
  grad_fn = getattr(streaming, fn)
  ref = jax.jit(lambda p, b: grad_fn(loss_fn, p, b, c=c,
                                     microbatch_size=microbatch_size))(
                                         params, batch)
  m = mesh()
  out = jax.jit(jax.shard_map(
      lambda p, b: grad_fn(loss_fn, p, b, c=c, microbatch_size=microbatch_size,
                           axis_name='data'),
      mesh=m, in_specs=(P(), P('data')), out_specs=P()))(
          params, jax.device_put(batch, NamedSharding(m, P('data'))))
  per_example = jax.vmap(jax.grad(lambda p, x: loss_fn(
      p, jax.tree.map(lambda v: v[None], x))[0]), in_axes=(None, 0))(
          params, batch)
  assert_matches(out, ref, per_example)


@pytest.mark.parametrize('fn,microbatch_size', [
    ('winsorized_mean_grad', 2),   # 3 rows per device: scan + remainder
    ('trimmed_mean_grad', 4),      # one pass per device (all_to_all)
])
def test_streaming_grads_of_an_nnx_model_across_devices(fn, microbatch_size):
  """from_nnx models take the factored Dense path (OuterRows): inside
  shard_map its zero perturbations and params must vary like the batch, or
  their gradients come back summed over the devices."""
  loss, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(3 * D)
  grad_fn = getattr(streaming, fn)
  ref = jax.jit(lambda p, b: grad_fn(loss, p, b, c=1,
                                     microbatch_size=microbatch_size))(
                                         params, batch)
  m = mesh()
  out = jax.jit(jax.shard_map(
      lambda p, b: grad_fn(loss, p, b, c=1, microbatch_size=microbatch_size,
                           axis_name='data'),
      mesh=m, in_specs=(P(), P('data')), out_specs=P()))(
          params, jax.device_put(batch, NamedSharding(m, P('data'))))
  rows = helpers.loop_grads(loss, params, batch)
  for o, r, x in zip(jax.tree.leaves(out), jax.tree.leaves(ref),
                     jax.tree.leaves(rows)):
    np.testing.assert_array_less(np.abs(np.asarray(o) - np.asarray(r)),
                                 tolerance(x) + 1e-30)


def test_factored_grads_inside_shard_map_are_each_examples_own():
  loss, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(2 * D)
  m = mesh()
  out = jax.jit(jax.shard_map(
      lambda p, b: factored_dense.materialize_grads(
          factored_dense.factored_grads(loss, p, b)),
      mesh=m, in_specs=(P(), P('data')), out_specs=P('data')))(
          params, jax.device_put(batch, NamedSharding(m, P('data'))))
  want = helpers.loop_grads(loss, params, batch)
  for o, w in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
    # Each example's gradient is a few products of float32 values: ~1e-6
    # relative to the largest entry (not device-summed: that is O(1) off).
    np.testing.assert_allclose(o, w, rtol=1e-5,
                               atol=1e-5 * float(np.abs(w).max()))


def test_streaming_sharded_batch_needs_axis_name():
  params, batch = mlp_setup(6 * D)
  m = mesh()
  step = jax.shard_map(
      lambda p, b: streaming.trimmed_mean_grad(loss_fn, p, b, c=1,
                                               microbatch_size=4),
      mesh=m, in_specs=(P(), P('data')), out_specs=P())
  with pytest.raises(ValueError, match="axis_name='data'"):
    step(params, jax.device_put(batch, NamedSharding(m, P('data'))))


def test_long_local_batches_stream_in_blocks():
  """More than folds.MAX_UNROLLED_ROWS rows per device (scanned blocks).

  The reference is numpy's sort (one device's transform at B = 1040 costs
  tens of seconds to compile on XLA:CPU).
  """
  rng = np.random.default_rng(2)
  x = rng.standard_t(2, size=(D * 130, 2)).astype(np.float32)
  x[:, 1] = np.round(x[:, 1])          # many ties at the bounds
  c, n = 5, x.shape[0]
  s = np.sort(x.astype(np.float64), axis=0)
  refs = {'winsorized_mean': np.clip(s, s[c], s[n - c - 1]).mean(0),
          'trimmed_mean': s[c:n - c].mean(0)}
  params = {'v': jnp.zeros(2)}
  m = mesh()
  sharded_x = jax.device_put({'v': x}, NamedSharding(m, P('data')))
  for name, ref in refs.items():
    tx = getattr(aggregators, name)(c, axis_name='data')
    out = jax.jit(jax.shard_map(
        lambda u, t=tx: t.update(u, t.init(params))[0], mesh=m,
        in_specs=(P('data'),), out_specs=P()))(sharded_x)
    assert_matches(out, {'v': ref}, {'v': x})


# The exact schemes of the distributed winsorized / trimmed mean
# (across_devices.SCHEMES): all_to_all of the local rows or of per-device
# summaries (2c + 3 values per coordinate) to the device owning a slice of
# the coordinates, or the all_gather of every device's extremes. Each must
# equal the single-device transform; the tolerance is the module's (sums of
# the same values in another order). The trimmed mean of the summaries is
# (winsorized sum - c*lo - c*hi) / (B - 2c): every term is a clipped value,
# at most max|x| in magnitude, so its rounding stays inside the same bound.

def odd_updates(local=6):
  """[D * local, ...] updates with 11 float32 coordinates (not a multiple
  of D = 8) and a bfloat16 leaf (a second dtype: its own all_to_all), with
  ties, NaN and +-inf. The bfloat16 values are small integers: their sums are
  exact in bfloat16 (< 256), so both sides agree to one rounding of the
  final division."""
  rng = np.random.default_rng(3)
  n = D * local
  u = rng.normal(size=(n, 2, 3)).astype(np.float32)
  v = np.round(rng.normal(size=(n, 5))).astype(np.float32)   # ties
  u[:, 1, 2] = 2.0                                          # constant
  u[5, 0, 0] = np.inf                                       # one +inf
  u[n - 4:, 0, 1] = -np.inf                                 # 4 x -inf
  u[0:3, 0, 2] = np.inf                                     # +inf, with
  u[n - 3:, 0, 2] = -np.inf                                 # as many -inf
  u[9, 1, 0] = np.nan
  v[:, 4] = np.where(np.arange(n) % 2, 1e6, -1e6)           # huge, tied
  h = rng.integers(-3, 4, size=(n, 3)).astype(jnp.bfloat16)
  return {'u': u, 'v': v, 'h': h}


def odd_params():
  return {'u': jnp.zeros((2, 3)), 'v': jnp.zeros(5),
          'h': jnp.zeros(3, jnp.bfloat16)}


def assert_matches_dtype(out, ref, rows):
  """assert_matches with each leaf's own eps (bfloat16: 2**-7)."""
  for k in ref:
    eps = float(jnp.finfo(rows[k].dtype).eps)
    x = np.asarray(rows[k], np.float64)
    finite = np.where(np.isfinite(x), np.abs(x), 0.0).max(axis=0)
    out_k = np.asarray(out[k], np.float64)
    ref_k = np.asarray(ref[k], np.float64)
    np.testing.assert_array_equal(np.isnan(out_k), np.isnan(ref_k), err_msg=k)
    np.testing.assert_array_equal(np.isinf(out_k) * np.sign(out_k),
                                  np.isinf(ref_k) * np.sign(ref_k), err_msg=k)
    ok = np.isfinite(ref_k)
    err = np.abs(np.where(ok, out_k, 0) - np.where(ok, ref_k, 0))
    assert np.all(err <= 2 * x.shape[0] * eps * finite), (k, err.max())


def reference(name, c, g, params):
  tx = getattr(aggregators, name)(c)
  return jax.jit(lambda u: tx.update(u, tx.init(params))[0])(g)


def across(name, c, g, scheme=None, axes=('data',), shape=(D,)):
  """across_devices.<name> inside shard_map over a mesh of `shape`."""
  m = jax.make_mesh(shape, axes)
  spec = P(axes if len(axes) > 1 else axes[0])
  axis_name = axes if len(axes) > 1 else axes[0]
  fn = getattr(across_devices, name)
  step = jax.shard_map(lambda u: fn(u, c, axis_name, scheme), mesh=m,
                       in_specs=(spec,), out_specs=P())
  return jax.jit(step)(jax.device_put(g, NamedSharding(m, spec)))


@pytest.mark.parametrize('name,scheme', [
    ('trimmed_mean', 'all_to_all_summaries'),
    ('winsorized_mean', 'gather_summaries'),
    pytest.param('winsorized_mean', 'all_to_all_summaries', marks=SLOW),
    pytest.param('trimmed_mean', 'gather_summaries', marks=SLOW),
    pytest.param('winsorized_mean', 'all_to_all_rows', marks=SLOW),
    pytest.param('trimmed_mean', 'all_to_all_rows', marks=SLOW)])
def test_each_scheme_equals_one_device(name, scheme):
  """b = 3 rows per device, c = 1: every scheme applies (summaries: b >= 3).

  all_to_all_rows is the default here, already run by the tests above.
  """
  g = updates()
  assert_matches(across(name, 1, g, scheme), reference(name, 1, g, PARAMS), g)


@pytest.mark.parametrize('name,scheme', [
    pytest.param('winsorized_mean', 'all_to_all_summaries', marks=SLOW),
    ('trimmed_mean', 'all_to_all_summaries'),
    pytest.param('winsorized_mean', 'all_to_all_rows', marks=SLOW),
    pytest.param('trimmed_mean', 'all_to_all_rows', marks=SLOW),
])
def test_padded_coordinates_two_dtypes(name, scheme):
  """11 + 3 coordinates on 8 devices (padded to 16 + 8), two dtypes, ties,
  NaN, +-inf (+-inf bounds: the trimmed mean's special cases); b = 3."""
  g = odd_updates(3)
  ref = reference(name, 1, g, odd_params())
  assert np.isnan(ref['u'][1, 0]) and np.isneginf(ref['u'][0, 1])
  assert_matches_dtype(across(name, 1, g, scheme), ref, g)


@SLOW
@pytest.mark.parametrize('name', ['winsorized_mean', 'trimmed_mean'])
def test_default_summaries_on_longer_local_batches(name):
  """b = 6, c = 1: the default is all_to_all_summaries (2c + 4 = 6 < b + 1);
  B = 48 > order_stats.folds.MAX_UNROLLED_ROWS, so the reference streams."""
  g = odd_updates(6)
  assert across_devices.choose_scheme(6, 1, D) == 'all_to_all_summaries'
  assert_matches_dtype(across(name, 1, g), reference(name, 1, g,
                                                     odd_params()), g)


@pytest.mark.parametrize('name', [
    'trimmed_mean', pytest.param('winsorized_mean', marks=SLOW)])
def test_separate_inputs_share_one_exchange(name, monkeypatch):
  """Leaves too large to pack are inputs of their own; one all_to_all per
  dtype still carries them all (concatenated, then split back)."""
  monkeypatch.setattr(order_stats.packing, 'PACK_MAX_SIZE', 2)
  g = odd_updates(3)
  assert_matches_dtype(across(name, 1, g, 'all_to_all_summaries'),
                       reference(name, 1, g, odd_params()), g)


@pytest.mark.parametrize('name,scheme', [
    ('trimmed_mean', 'all_to_all_summaries'),
    pytest.param('winsorized_mean', None, marks=SLOW),
    pytest.param('trimmed_mean', 'all_to_all_rows', marks=SLOW),
])
def test_tuple_axis_name_2d_mesh(name, scheme):
  """A 2 x 4 mesh, batch sharded over ('host', 'data'): device order is the
  row-major order of the pair, as in a tiled all_gather."""
  g = odd_updates(3)
  out = across(name, 1, g, scheme, axes=('host', 'data'), shape=(2, 4))
  assert_matches_dtype(out, reference(name, 1, g, odd_params()), g)


@pytest.mark.parametrize('name,scheme', [
    ('trimmed_mean', 'all_to_all_summaries'),
    pytest.param('winsorized_mean', 'all_to_all_summaries', marks=SLOW),
    pytest.param('winsorized_mean', 'all_to_all_rows', marks=SLOW),
    pytest.param('trimmed_mean', 'all_to_all_rows', marks=SLOW),
])
def test_all_to_all_schemes_in_pmap(name, scheme):
  g = updates()
  local = jax.tree.map(lambda x: x.reshape((D, -1) + x.shape[1:]), g)
  out = jax.pmap(lambda u: getattr(across_devices, name)(u, 1, 'i', scheme),
                 axis_name='i')(local)
  for k in out:  # every device holds the same (global) answer
    np.testing.assert_array_equal(out[k], np.broadcast_to(out[k][:1],
                                                          out[k].shape))
  assert_matches(jax.tree.map(lambda x: x[0], out),
                 reference(name, 1, g, PARAMS), g)


def test_summaries_of_factored_rows():
  """OuterRows feed extreme_rows / strict_middle_fold lazily."""
  rng = np.random.default_rng(4)
  a = rng.normal(size=(B, 3)).astype(np.float32)
  d = rng.normal(size=(B, 2)).astype(np.float32)
  d[4] = 50.0
  rows = {'k': a[:, :, None] * d[:, None, :]}
  lazy = {'k': OuterRows(jnp.asarray(a), jnp.asarray(d))}
  for name in ('winsorized_mean', 'trimmed_mean'):
    assert_matches(across(name, 1, lazy, 'all_to_all_summaries'),
                   reference(name, 1, rows, {'k': jnp.zeros((3, 2))}), rows)


def collective_values(fn, *args):
  """Values delivered per device by the collectives in fn's jaxpr.

  The output sizes of all_to_all, all_gather and psum equations (inside
  shard_map they are per-device shapes); none sits inside a loop here.
  """
  total = 0

  def walk(jaxpr):
    nonlocal total
    for eqn in jaxpr.eqns:
      if eqn.primitive.name.startswith(('all_to_all', 'all_gather', 'psum')):
        total += sum(int(np.prod(v.aval.shape)) for v in eqn.outvars)
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)
          if hasattr(sub, 'eqns'):
            walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return total


@pytest.mark.parametrize('name', ['winsorized_mean', 'trimmed_mean'])
def test_communication_is_what_the_rule_says(name):
  """The collectives of each scheme deliver values_per_coordinate values per
  coordinate (all_to_all schemes: per coordinate padded to a multiple of D
  within each dtype), and the default is choose_scheme's."""
  g = odd_updates()   # 11 float32 coordinates (padded: 16), 3 bf16 (8)
  m = mesh()
  sharded_g = jax.device_put(g, NamedSharding(m, P('data')))
  trimmed = name == 'trimmed_mean'

  def values(scheme, c):
    fn = jax.shard_map(
        lambda u: getattr(across_devices, name)(u, c, 'data', scheme),
        mesh=m, in_specs=(P('data'),), out_specs=P())
    return collective_values(fn, sharded_g)

  for c in (1, 2):
    for scheme in across_devices.SCHEMES:
      per = across_devices.values_per_coordinate(scheme, 6, c, D, trimmed)
      coords = 14 if scheme == 'gather_summaries' else 16 + 8
      assert values(scheme, c) == per * coords, (scheme, c)
    chosen = across_devices.choose_scheme(6, c, D, trimmed)
    assert values(None, c) == values(chosen, c)
  # c = 1: summaries (6) < rows (7); c = 2: rows (7) < summaries (8).
  assert across_devices.choose_scheme(6, 1, D) == 'all_to_all_summaries'
  assert across_devices.choose_scheme(6, 2, D) == 'all_to_all_rows'


def test_choice_rule():
  """ResNet-50 at B = 1024, c = 4 (docs/benchmarks.md, 'Scale'), and the
  corner cases."""
  per = {d: {s: across_devices.values_per_coordinate(s, 1024 // d, 4, d)
             for s in across_devices.SCHEMES} for d in (8, 64, 256)}
  assert per[8] == {'all_to_all_rows': 129, 'all_to_all_summaries': 12,
                    'gather_summaries': 81}
  assert per[256]['all_to_all_rows'] == 5
  assert per[256]['gather_summaries'] == 2561
  for d, want in ((8, 'all_to_all_summaries'), (64, 'all_to_all_summaries'),
                  (256, 'all_to_all_rows')):
    assert across_devices.choose_scheme(1024 // d, 4, d) == want
  # Summaries need b >= 2c + 1; below that rows are cheaper anyway.
  assert across_devices.choose_scheme(3, 3, 8) == 'all_to_all_rows'
  assert across_devices.choose_scheme(6, 1, 8, True) == 'all_to_all_summaries'
  # Tie (b + 1 == 2c + 4): rows, the first in SCHEMES.
  assert across_devices.choose_scheme(5, 1, 8) == 'all_to_all_rows'
  # One device: nothing travels; the gather's figure 2(c+1) + 1 is smallest.
  assert across_devices.choose_scheme(100, 1, 1) == 'gather_summaries'
  # The bounds alone (streamed gradients).
  assert across_devices.bounds_scheme(4, 1) == 'gather'
  # c = 0, D = 2: 4 values either way (a tie: one collective).
  assert [across_devices.bounds_scheme(c, 2) for c in (0, 1)] == [
      'gather', 'all_to_all']


def test_scheme_errors():
  g = updates()
  with pytest.raises(ValueError, match=r'needs b >= 2c\+1 = 7'):
    across('winsorized_mean', 3, g, 'all_to_all_summaries')
  with pytest.raises(ValueError, match='scheme: got'):
    across('trimmed_mean', 1, g, 'ring')


@pytest.mark.parametrize('scheme', across_devices.BOUNDS_SCHEMES)
def test_global_bounds_schemes(scheme):
  """x_(c+1), x_(B-c) of the global batch from each device's extremes."""
  g = odd_updates()['u']
  c = 4
  m = mesh()

  def bounds(u):
    return across_devices.global_bounds(
        u, order_stats.extreme_rows(u, c), c, 'data', scheme)

  lo, hi = jax.jit(jax.shard_map(bounds, mesh=m, in_specs=(P('data'),),
                                 out_specs=P()))(
      jax.device_put(g, NamedSharding(m, P('data'))))
  s = np.sort(g, axis=0)       # numpy sorts NaN last: compare where finite
  nan = np.isnan(g).any(axis=0)
  np.testing.assert_array_equal(np.where(nan, np.nan, s[c]), lo)
  np.testing.assert_array_equal(np.where(nan, np.nan, s[-c - 1]), hi)


# Median of means and the coordinate median: the same exchange (the chunk
# sums, or the rows, of one slice of the coordinates to the device owning
# it) or the all_gather to every device. Sums of the same values in another
# order only (tolerance as above); the medians pick the same values.

@pytest.mark.parametrize('scheme,k', [
    ('all_to_all', 6), pytest.param('gather', 6, marks=SLOW),
    pytest.param('all_to_all', 4, marks=SLOW),
    pytest.param('gather', 4, marks=SLOW),
    pytest.param('all_to_all', 8, marks=SLOW)])
def test_median_of_means_schemes(scheme, k):
  """k = 4: groups span 2 devices; 6: they straddle devices (b = 3, m = 4)."""
  g = odd_updates(3)
  m = mesh()
  step = jax.shard_map(
      lambda u: across_devices.median_of_means(u, k, 'data', scheme),
      mesh=m, in_specs=(P('data'),), out_specs=P())
  out = jax.jit(step)(jax.device_put(g, NamedSharding(m, P('data'))))
  tx = aggregators.median_of_means(k)
  ref = jax.jit(lambda u: tx.update(u, tx.init(odd_params()))[0])(g)
  assert_matches_dtype(out, ref, g)


@pytest.mark.parametrize('scheme', [
    'all_to_all', pytest.param('gather', marks=SLOW)])
def test_coordinate_median_schemes(scheme):
  g = odd_updates(3)
  m = mesh()
  step = jax.shard_map(lambda u: across_devices.median(u, 'data', scheme),
                       mesh=m, in_specs=(P('data'),), out_specs=P())
  out = jax.jit(step)(jax.device_put(g, NamedSharding(m, P('data'))))
  tx = aggregators.coordinate_median()
  assert_matches_dtype(
      out, jax.jit(lambda u: tx.update(u, tx.init(odd_params()))[0])(g), g)


@SLOW
def test_median_schemes_in_pmap_and_2d_mesh():
  g = odd_updates(3)
  tx = aggregators.median_of_means(6)
  ref = jax.jit(lambda u: tx.update(u, tx.init(odd_params()))[0])(g)
  local = jax.tree.map(lambda x: x.reshape((D, -1) + x.shape[1:]), g)
  out = jax.pmap(lambda u: across_devices.median_of_means(
      u, 6, 'i', 'all_to_all'), axis_name='i')(local)
  assert_matches_dtype(jax.tree.map(lambda x: x[0], out), ref, g)
  m = jax.make_mesh((2, 4), ('host', 'data'))
  spec = P(('host', 'data'))
  out = jax.jit(jax.shard_map(
      lambda u: across_devices.median_of_means(u, 6, ('host', 'data'),
                                               'all_to_all'),
      mesh=m, in_specs=(spec,), out_specs=P()))(
          jax.device_put(g, NamedSharding(m, spec)))
  assert_matches_dtype(out, ref, g)


def test_median_communication_and_rules():
  g = odd_updates(3)   # b = 3, B = 24; 14 coordinates, padded 16 + 8
  m = mesh()
  sharded_g = jax.device_put(g, NamedSharding(m, P('data')))

  def values(fn):
    return collective_values(jax.shard_map(
        fn, mesh=m, in_specs=(P('data'),), out_specs=P()), sharded_g)

  # k = 6: chunks of g = gcd(3, 4) = 1 row; a2a: b/g + 1 = 4 per (padded)
  # coordinate, gather: B/g = 24.
  mom = lambda s: lambda u: across_devices.median_of_means(u, 6, 'data', s)
  assert values(mom('all_to_all')) == 4 * 24
  assert values(mom('gather')) == 24 * 14
  assert values(mom(None)) == values(mom('all_to_all'))
  med = lambda s: lambda u: across_devices.median(u, 'data', s)
  assert values(med('all_to_all')) == 4 * 24 and values(med(None)) == 4 * 24
  assert values(med('gather')) == 24 * 14
  # ResNet-50 at B = 1024, k = 8 (docs/benchmarks.md, 'Scale').
  assert [across_devices.median_of_means_scheme(1024 // d, 8, d)
          for d in (8, 64, 256)] == ['all_to_all'] * 3
  # A factored Dense kernel row set travels cheaper as factors.
  rows = OuterRows(jnp.ones((1, 512)), jnp.ones((1, 1000)))
  assert across_devices.median_scheme(rows, 8) == 'gather'
  assert across_devices.median_scheme(jnp.ones((1, 512, 1000)), 8) == (
      'all_to_all')
  with pytest.raises(ValueError, match="scheme: got 'ring'"):
    values(mom('ring'))
