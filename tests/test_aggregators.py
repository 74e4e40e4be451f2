"""Tests for coherence_jax.aggregators against numpy order statistics.

float32 tolerances: RTOL = 1e-5, ATOL = 1e-6 against float64 numpy references.
"""

import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

from coherence_jax import aggregators
from coherence_jax.aggregators import order_stats

RTOL, ATOL = 1e-5, 1e-6


def np_winsorized(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  n = s.shape[0]
  return np.clip(s, s[c], s[n - c - 1]).mean(0)


def np_trimmed(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  return s[c:s.shape[0] - c].mean(0)


def np_mom(x, k):
  x = np.asarray(x, np.float64)
  means = x.reshape((k, -1) + x.shape[1:]).mean(1)
  return np.median(means, axis=0)


def make_tree(b, seed=0, outliers=True):
  rng = np.random.default_rng(seed)
  tree = {'w': rng.normal(size=(b, 5, 3)).astype(np.float32),
          'b': rng.normal(size=(b, 4)).astype(np.float32)}
  if outliers:
    tree['w'][0, 0, 0] = 1e6
    tree['w'][min(1, b - 1), 1, 1] = -3e5
    tree['b'][b - 1, 2] = 50.0
  return tree


def params_of(tree):
  return jax.tree.map(lambda x: jnp.zeros(x.shape[1:]), tree)


def apply(tx, tree):
  params = params_of(tree)
  out, _ = jax.jit(tx.update)(tree, tx.init(params), params)
  return out


@pytest.mark.parametrize('b,c', [(5, 0), (5, 2), (10, 1), (16, 3), (9, 4)])
def test_winsorized_and_trimmed_match_numpy(b, c):
  tree = make_tree(b, seed=b + c)
  w = apply(aggregators.winsorized_mean(c), tree)
  t = apply(aggregators.trimmed_mean(c), tree)
  for k in tree:
    np.testing.assert_allclose(w[k], np_winsorized(tree[k], c), RTOL, ATOL)
    np.testing.assert_allclose(t[k], np_trimmed(tree[k], c), RTOL, ATOL)


def test_sort_fallback_matches_numpy():
  x = make_tree(25, seed=3)['w']
  c = order_stats.folds.MAX_NETWORK_C + 2
  np.testing.assert_allclose(order_stats.winsorized_mean(jnp.asarray(x), c),
                             np_winsorized(x, c), RTOL, ATOL)
  np.testing.assert_allclose(order_stats.trimmed_mean(jnp.asarray(x), c),
                             np_trimmed(x, c), RTOL, ATOL)


@pytest.mark.parametrize('b,k', [(6, 1), (6, 2), (6, 3), (12, 4), (10, 5),
                                 (20, 20)])
def test_median_of_means_matches_numpy(b, k):
  tree = make_tree(b, seed=k)
  out = apply(aggregators.median_of_means(k), tree)
  for key in tree:
    np.testing.assert_allclose(out[key], np_mom(tree[key], k), RTOL, ATOL)


@pytest.mark.parametrize('n', [1, 2, 3, 4, 7, 20])
def test_coordinate_median_matches_numpy(n):
  tree = make_tree(n, seed=n, outliers=n > 2)
  out = apply(aggregators.coordinate_median(), tree)
  for key in tree:
    np.testing.assert_allclose(out[key], np.median(tree[key], 0), RTOL, ATOL)


def test_c0_and_one_group_are_the_mean():
  tree = make_tree(8, outliers=False)
  for tx in (aggregators.winsorized_mean(0), aggregators.trimmed_mean(0),
             aggregators.median_of_means(1)):
    out = apply(tx, tree)
    for k in tree:
      np.testing.assert_allclose(out[k], tree[k].astype(np.float64).mean(0),
                                 RTOL, ATOL)


def test_permutation_invariance():
  tree = make_tree(11, seed=7)
  perm = np.random.default_rng(0).permutation(11)
  shuffled = jax.tree.map(lambda x: x[perm], tree)
  for tx in (aggregators.winsorized_mean(3), aggregators.trimmed_mean(2),
             aggregators.coordinate_median()):
    a, b = apply(tx, tree), apply(tx, shuffled)
    for k in tree:
      np.testing.assert_allclose(a[k], b[k], RTOL, ATOL)


def test_outlier_moves_mean_not_winsorized():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(20, 6)).astype(np.float32)
  y = x.copy()
  y[3, 2] = 1e6
  tree_x, tree_y = {'g': x}, {'g': y}
  mean_x, mean_y = x.mean(0), y.mean(0)
  assert abs(mean_y[2] - mean_x[2]) > 1e4
  w = aggregators.winsorized_mean(1)
  wx, wy = apply(w, tree_x)['g'], apply(w, tree_y)['g']
  # One example moves each order statistic by at most one rank, so the change
  # is bounded by the spread of the clean values divided by B.
  bound = (x[:, 2].max() - x[:, 2].min()) * 2 / 20
  assert abs(wy[2] - wx[2]) <= bound
  np.testing.assert_allclose(np.delete(wy, 2), np.delete(wx, 2), RTOL, ATOL)


def test_chain_with_momentum_under_jit_and_weight_decay_commutes():
  tree = make_tree(9, seed=2)
  params = jax.tree.map(lambda x: jnp.ones(x.shape[1:]), tree)
  wd = 0.1
  tx = optax.chain(aggregators.winsorized_mean(2),
                   optax.add_decayed_weights(wd),
                   optax.sgd(0.1, momentum=0.9))
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(2):
    updates, state = step(tree, state, params)
  # Reference: decay added to every example before the winsorized mean.
  ref_tx = optax.sgd(0.1, momentum=0.9)
  ref_state = ref_tx.init(params)
  for _ in range(2):
    g = {k: np_winsorized(tree[k] + wd * np.asarray(params[k])[None], 2)
         for k in tree}
    ref, ref_state = ref_tx.update(g, ref_state)
  for k in tree:
    np.testing.assert_allclose(updates[k], ref[k], RTOL, ATOL)


def test_state_roundtrips_through_orbax(tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  params = {'w': jnp.ones((3, 2))}
  tx = optax.chain(aggregators.winsorized_mean(1),  # zero-size shape records
                   aggregators.rolling_median(3), optax.sgd(0.1, momentum=0.9))
  state = tx.init(params)
  for i in range(2):
    _, state = tx.update({'w': jnp.full((5, 3, 2), float(i))}, state, params)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / 'state', state)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / 'state', state)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- over steps


def run_steps(tx, grads, params):
  state = tx.init(params)
  step = jax.jit(tx.update)
  outs = []
  for g in grads:
    u, state = step(g, state, params)
    outs.append(np.asarray(u))
  return outs


def step_grads(n=7, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(4,)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize('window', [3, 4])
def test_rolling_median_and_mean_match_reference(window):
  grads = step_grads()
  params = jnp.full((4,), 123.0)  # init's argument must not seed the buffer
  med = run_steps(aggregators.rolling_median(window), grads, params)
  avg = run_steps(aggregators.rolling_mean(window), grads, params)
  buf = [grads[0]] * window
  for t, g in enumerate(grads):
    if t > 0:
      buf = buf[1:] + [g]
    stacked = np.stack(buf).astype(np.float64)
    np.testing.assert_allclose(med[t], np.median(stacked, 0), RTOL, ATOL)
    np.testing.assert_allclose(avg[t], stacked.mean(0), RTOL, ATOL)
  np.testing.assert_allclose(med[0], grads[0], RTOL, ATOL)
  np.testing.assert_allclose(med[1], grads[0], RTOL, ATOL)  # median(g0,g0,g1)


def test_periodic_median_matches_reference():
  grads = step_grads(9, seed=1)
  params = jnp.zeros((4,))
  outs = run_steps(
      aggregators.periodic_median(optax.sgd(1.0, momentum=0.5), window=3),
      grads, params)
  trace = np.zeros(4)
  for t, g in enumerate(grads):
    if t % 3 == 2:
      med = np.median(np.stack(grads[t - 2:t + 1]).astype(np.float64), 0)
      trace = med + 0.5 * trace
      np.testing.assert_allclose(outs[t], -trace, RTOL, ATOL)
    else:
      np.testing.assert_array_equal(outs[t], np.zeros(4))


def test_periodic_median_state_counts():
  tx = aggregators.periodic_median(optax.sgd(1.0), window=3)
  state = tx.init(jnp.zeros(2))
  for _ in range(4):
    _, state = tx.update(jnp.ones(2), state)
  assert int(state.mini_step) == 1
  # gradient_step was written and never read: the field is gone.
  assert state._fields == ('mini_step', 'buffer', 'inner_state')


# ---------------------------------------------------------------- bad input


def test_bad_input_raises():
  tree = make_tree(5)
  with pytest.raises(ValueError, match='2c\\+1'):
    apply(aggregators.winsorized_mean(3), tree)
  with pytest.raises(ValueError, match='2c\\+1'):
    apply(aggregators.trimmed_mean(3), tree)
  with pytest.raises(ValueError, match='num_groups=2 does not divide'):
    apply(aggregators.median_of_means(2), tree)
  with pytest.raises(ValueError, match='non-negative int'):
    aggregators.winsorized_mean(-1)
  mismatched = {'w': jnp.zeros((5, 3)), 'b': jnp.zeros((4, 3))}
  tx = aggregators.winsorized_mean(1)
  with pytest.raises(ValueError, match='leading axes that differ'):
    tx.update(mismatched, tx.init({'w': jnp.zeros(3), 'b': jnp.zeros(3)}))
  params = {'w': jnp.zeros((5, 3))}
  with pytest.raises(ValueError, match=r"shape \(5, 3\) at 'w'.*needs \(B, 5, 3\)"):
    tx.update({'w': jnp.zeros((5, 3))}, tx.init(params), params)
  with pytest.raises(ValueError, match=r'needs \(B,\)'):
    tx.update({'w': jnp.zeros(())}, tx.init({'w': jnp.zeros(())}))
  with pytest.raises(ValueError, match='params: winsorized_mean.init'):
    tx.init(None)
  median = aggregators.coordinate_median(axis_name='data')
  with pytest.raises(ValueError, match='not an axis'):  # outside shard_map
    median.update(tree, median.init(jax.tree.map(lambda x: x[0], tree)))
  with pytest.raises(ValueError, match='window'):
    aggregators.rolling_median(0)


def test_nan_propagates_to_its_coordinate_only_and_inf_is_clipped():
  x = make_tree(9, seed=4, outliers=False)['b']
  x_nan = x.copy()
  x_nan[2, 1] = np.nan
  x_inf = x.copy()
  x_inf[5, 3] = np.inf
  for tx in (aggregators.winsorized_mean(2), aggregators.trimmed_mean(2),
             aggregators.median_of_means(3), aggregators.coordinate_median(),
             aggregators.winsorized_mean(0)):
    out = np.asarray(apply(tx, {'g': x_nan})['g'])
    assert np.isnan(out[1]) and np.isfinite(np.delete(out, 1)).all()
  out = np.asarray(apply(aggregators.winsorized_mean(1), {'g': x_inf})['g'])
  np.testing.assert_allclose(out, np_winsorized(x_inf, 1), RTOL, ATOL)
  # Sort fallback follows the same NaN policy.
  big = np.tile(x_nan, (3, 1))
  c = order_stats.folds.MAX_NETWORK_C + 1
  out = np.asarray(order_stats.winsorized_mean(jnp.asarray(big), c))
  assert np.isnan(out[1]) and np.isfinite(np.delete(out, 1)).all()
  med = run_steps(aggregators.rolling_median(3),
                  [np.array([1., np.nan]), np.array([2., 3.])], jnp.zeros(2))
  assert np.isnan(med[1][1]) and med[1][0] == 1.0


@pytest.mark.parametrize('n,c', [(17, 1), (50, 3)])
def test_long_inputs_stream_in_blocks_and_match_numpy(n, c, monkeypatch):
  # n > MAX_UNROLLED_ROWS: thresholds, then the clipped sum, in row blocks
  # (blocks of 8 rows here, to keep compile time short).
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 8)
  rng = np.random.default_rng(n)
  x = rng.normal(size=(n, 6)).astype(np.float32)
  x[:, 0] = np.round(x[:, 0])  # ties at the bounds
  x[3, 1] = np.inf             # clipped like any extreme value
  x[:2 * c + 2, 2] = np.inf    # more infinities than trimmed: the bound is inf
  tree = {'g': jnp.asarray(x)}
  out = np.asarray(apply(aggregators.winsorized_mean(c), tree)['g'])
  np.testing.assert_allclose(out[[0, 1, 3, 4, 5]],
                             np_winsorized(x, c)[[0, 1, 3, 4, 5]], RTOL, ATOL)
  assert np.isposinf(out[2])
  out = np.asarray(apply(aggregators.trimmed_mean(c), tree)['g'])
  np.testing.assert_allclose(out[[0, 1, 3, 4, 5]],
                             np_trimmed(x, c)[[0, 1, 3, 4, 5]], RTOL, 2 * ATOL)
  assert np.isposinf(out[2])
  x[7, 4] = np.nan
  for tx in (aggregators.winsorized_mean(c), aggregators.trimmed_mean(c)):
    out = np.asarray(apply(tx, {'g': jnp.asarray(x)})['g'])
    assert np.isnan(out[4]) and not np.isnan(np.delete(out, 4)).any()


@pytest.mark.parametrize('b', [9, 21])  # one network / streamed blocks
def test_packed_leaves_match_numpy_per_leaf(b, monkeypatch):
  # Leaves of at most PACK_MAX_SIZE values per row share one network per
  # dtype (OuterRows among them materialized); larger ones stay alone.
  monkeypatch.setattr(order_stats.packing, 'PACK_MAX_SIZE', 12)
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 8)
  rng = np.random.default_rng(b)
  ints = lambda *shape: rng.integers(-3, 4, size=shape).astype(np.float32)
  a_small, d_small = rng.normal(size=(b, 3)), rng.normal(size=(b, 2))
  a_big, d_big = rng.normal(size=(b, 4)), rng.normal(size=(b, 5))
  rows = {'w': rng.normal(size=(b, 5, 3)), 'b': ints(b, 4),
          'half': ints(b, 3), 'outer_small': (a_small, d_small),
          'outer_big': (a_big, d_big)}
  rows['w'][0, 0, 0] = 1e6
  rows['b'][b - 1, 2] = np.inf
  tree = {'w': jnp.asarray(rows['w'], jnp.float32),
          'b': jnp.asarray(rows['b']),
          'half': jnp.asarray(rows['half'], jnp.bfloat16),
          'outer_small': aggregators.OuterRows(
              jnp.asarray(a_small, jnp.float32), jnp.asarray(d_small,
                                                            jnp.float32)),
          'outer_big': aggregators.OuterRows(
              jnp.asarray(a_big, jnp.float32), jnp.asarray(d_big,
                                                          jnp.float32))}
  inputs, _ = order_stats.pack_leaves(tree)
  # w (15 values) and outer_big (20) alone; b + outer_small (4 + 6) packed
  # as float32, half alone as bfloat16.
  assert sorted(tuple(x.shape[1:]) for x in inputs) == [(3,), (4, 5), (5, 3),
                                                         (10,)]
  full = {k: np.asarray(v, np.float64) for k, v in rows.items()
          if not k.startswith('outer')}
  for k in ('outer_small', 'outer_big'):
    a, d = (np.asarray(np.float32(v), np.float64) for v in rows[k])
    full[k] = a[:, :, None] * d[:, None, :]
  params = {k: jnp.zeros(v.shape[1:]) for k, v in full.items()}
  for make, ref, c in ((aggregators.winsorized_mean, np_winsorized, 2),
                       (aggregators.trimmed_mean, np_trimmed, 3)):
    tx = make(c)
    out = jax.jit(lambda u, t=tx: t.update(u, t.init(params))[0])(tree)
    for k, x in full.items():
      assert out[k].dtype == tree[k].dtype, k
      # bfloat16: the mean of small integers rounds once (eps 2^-8).
      rtol = 2.0 ** -8 if k == 'half' else RTOL
      np.testing.assert_allclose(np.asarray(out[k], np.float64), ref(x, c),
                                 rtol, ATOL, err_msg=k)


# ------------------------------------------------------ ties at both bounds


def test_trimmed_mean_constant_middle_long_input():
  # B = 129 > MAX_UNROLLED_ROWS: the two-pass path. x_(c+1) == x_(B-c): the
  # values equal to both bounds were counted twice (2.0157 instead of 1).
  assert 129 > order_stats.folds.MAX_UNROLLED_ROWS
  ones = jnp.ones((129, 1))
  for tx in (aggregators.trimmed_mean(1), aggregators.winsorized_mean(1)):
    out = apply(tx, {'g': ones})['g']
    np.testing.assert_array_equal(out, [1.0])


def test_trimmed_mean_ties_at_either_or_both_bounds_streamed(monkeypatch):
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 4)  # two passes
  cols = [[-5, 1, 1, 1, 1, 1, 7],      # lo == hi, outliers at both ends
          [1, 1, 1, 1, 1, 1, 1],       # all equal
          [0, 0, 0, 2, 2, 2, 2],       # ties at both bounds, lo < hi
          [-np.inf, 3, 3, 3, 3, 3, np.inf],
          [np.inf] * 7,
          [-1, 2, 2, 2, 9, 9, 9]]
  x = np.asarray(cols, np.float32).T
  for c in (1, 2, 3):
    out = apply(aggregators.trimmed_mean(c), {'g': jnp.asarray(x)})['g']
    np.testing.assert_allclose(out, np_trimmed(x, c), RTOL, ATOL)


# ------------------------------------------- over-steps buffer dtype (8.4)


@pytest.mark.parametrize('make', [
    aggregators.rolling_median, aggregators.rolling_mean,
    lambda window: aggregators.periodic_median(optax.sgd(-1.0), window)])
def test_over_steps_buffers_keep_int_and_bf16_params_gradients(make):
  # The buffer followed the params' dtype: an int32 param turned 0.7 into 0,
  # a bf16 param rounded 1.001 to 1.0.
  tx = make(window=1)
  for param, g in ((jnp.zeros(2, jnp.int32), 0.7),
                   (jnp.zeros(2, jnp.bfloat16), 1.001)):
    state = tx.init(param)
    assert all(b.dtype == jnp.float32 for b in jax.tree.leaves(state)
               if b.ndim == 2)
    grads = jnp.full(2, g, jnp.float32)
    out, _ = jax.jit(tx.update)(grads, state)
    assert out.dtype == jnp.float32  # the updates' dtype
    np.testing.assert_array_equal(out, grads)
  buffer_dtype = aggregators.over_steps.buffer_dtype
  assert buffer_dtype(jnp.float16) == jnp.float32
  assert buffer_dtype(jnp.float64) == jnp.float64
  assert buffer_dtype(jnp.complex64) == jnp.complex64


def test_trimmed_mean_streamed_counts_are_exact_in_bf16(monkeypatch):
  # The tie counts were accumulated in the input dtype: bf16 stops counting
  # at 256 (256 + 1 rounds to 256), so 300 ties at hi gave 0.426, not 0.5.
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 8)
  x = jnp.repeat(jnp.asarray([0.0, 1.0], jnp.bfloat16), 300)[:, None]
  out = apply(aggregators.trimmed_mean(1), {'g': x})['g']
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float32), [0.5])


# ------------------------------------------ compare-and-select networks: NaN


@pytest.mark.parametrize('n', [13, 20])  # one network / two streamed passes
def test_nan_at_any_row_reaches_only_its_coordinate(n, monkeypatch):
  # The networks compare and select (order_stats.networks._select_descending):
  # a NaN never enters the registers, so the NaN policy rests on the middle sum
  # (one network; the first 2c rows' NaN are added to it separately) and on
  # the second pass (clipped / strict-middle sums). Column j has its NaN at
  # row j, so every position, the first 2c rows included, is tried.
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 16)
  c = 3
  x = np.random.default_rng(n).normal(size=(n, n + 3)).astype(np.float32)
  x[np.arange(n), np.arange(n)] = np.nan
  x[:, n] = np.nan                                   # every value NaN
  x[[0, 1, n - 1], n + 1] = [np.inf, np.nan, -np.inf]  # NaN among +-inf
  for make, ref in ((aggregators.winsorized_mean, np_winsorized),
                    (aggregators.trimmed_mean, np_trimmed)):
    out = np.asarray(apply(make(c), {'g': jnp.asarray(x)})['g'])
    assert np.isnan(out[:n + 2]).all(), make
    np.testing.assert_allclose(out[n + 2], ref(x[:, n + 2], c), RTOL, ATOL)


def test_streamed_bounds_leave_nan_out_and_the_second_pass_propagates_it():
  # thresholds: the order statistics of the non-NaN values (-inf / +inf fill
  # in below c+1 of them); clipped_sum_fold / strict_middle_fold and
  # trimmed_from_middle turn a NaN value or bound into a NaN result.
  x = np.asarray([[1., 5., np.nan, 7., 2., 3.]] * 3, np.float32).T
  x[:, 1] = [np.nan] * 5 + [4.]
  x[2, 2] = 4.  # column 2: no NaN
  nan_lo = jnp.asarray([np.nan, 1., 1.])  # a NaN bound (across devices)

  @jax.jit
  def run(x):
    lo, hi = order_stats.thresholds(x, 1)
    acc = order_stats.strict_middle_fold(
        order_stats.strict_middle_init((3,), jnp.float32), x, lo, hi)
    return (lo, hi, order_stats.clipped_sum(x, lo, hi),
            order_stats.trimmed_from_middle(acc, lo, hi, 6, 1),
            order_stats.clipped_sum(x[:, 2:].repeat(3, 1), nan_lo, hi + 9))

  lo, hi, clipped, trimmed, nan_bound = run(jnp.asarray(x))
  np.testing.assert_array_equal(lo, [2., np.inf, 2.])
  np.testing.assert_array_equal(hi, [5., -np.inf, 5.])
  np.testing.assert_array_equal(np.isnan(clipped), [True, True, False])
  np.testing.assert_array_equal(np.isnan(trimmed), [True, True, False])
  np.testing.assert_allclose(clipped[2], 2 + 5 + 4 + 5 + 2 + 3, RTOL, ATOL)
  np.testing.assert_allclose(trimmed[2], (5 + 4 + 2 + 3) / 4, RTOL, ATOL)
  np.testing.assert_array_equal(np.isnan(nan_bound), [True, False, False])


# ------------------------------------ rows sharded over an Explicit mesh axis


@pytest.mark.parametrize('b,make', [
    (8, aggregators.winsorized_mean),                          # one network
    (24, aggregators.trimmed_mean),                            # two passes
    pytest.param(8, aggregators.trimmed_mean, marks=pytest.mark.slow),
    pytest.param(24, aggregators.winsorized_mean, marks=pytest.mark.slow)])
def test_rows_sharded_over_an_explicit_mesh_axis(b, make, monkeypatch):
  # jax.make_mesh's axes are Explicit (jax 0.10): rows placed with
  # NamedSharding(mesh, P('data')) carry their sharding in their type, and
  # slicing single rows of that axis raised a ShardingTypeError in
  # order_stats ("slicing on sharded dims ... is not implemented"). The rows
  # are now replicated first (order_stats.replicate_rows); the result is the
  # single-device one (same float32 rounding: the tolerances of the file).
  monkeypatch.setattr(order_stats.folds, 'MAX_UNROLLED_ROWS', 8)  # blocks of 8
  mesh = jax.make_mesh((8,), ('data',))
  assert mesh.axis_types == (jax.sharding.AxisType.Explicit,)
  tree = make_tree(b, seed=b)
  params = params_of(tree)
  sharded = jax.device_put(tree, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('data')))
  assert jax.typeof(sharded['w']).sharding.spec[0] == 'data'
  tx = make(2)
  out = jax.jit(lambda u: tx.update(u, tx.init(params), params)[0])(sharded)
  ref = np_winsorized if make is aggregators.winsorized_mean else np_trimmed
  for k in tree:
    np.testing.assert_allclose(out[k], ref(tree[k], 2), RTOL, ATOL,
                               err_msg=k)
