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
from coherence_jax.aggregators import streaming

EPS32 = float(np.finfo(np.float32).eps)
D = 8      # simulated devices (tests/conftest.py)
B = 24     # global batch: 3 rows per device, so c = 3 has B_local < c + 1
PARAMS = {'w': jnp.zeros((3, 2)), 'b': jnp.zeros((2,))}


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


CASES = [
    ('winsorized_mean', 1), ('winsorized_mean', 3), ('winsorized_mean', 11),
    ('trimmed_mean', 1), ('trimmed_mean', 3), ('trimmed_mean', 11),
    ('median_of_means', 1),   # the mean: one psum
    ('median_of_means', 4),   # m = 6: each group spans 2 devices
    ('median_of_means', 6),   # m = 4, b = 3: groups straddle devices
    ('median_of_means', 8),   # m = 3: one group per device
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


@pytest.mark.parametrize('name,arg', [('winsorized_mean', 3),
                                      ('trimmed_mean', 3),
                                      ('median_of_means', 6)])
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
    ('winsorized_mean_grad', 0, 4),   # the mean: one psum
    ('trimmed_mean_grad', 3, 4),
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
  """More than order_stats.MAX_UNROLLED_ROWS rows per device (scanned blocks).

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
