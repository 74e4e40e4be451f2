"""Property-based tests: every aggregator against a float64 np.sort reference.

Data are built to break order-statistics code: values from small sets (many
ties), constant middles (x_(c+1) == x_(B-c) with a few outliers), all-equal
columns and batches, sparse and saturated (+-1) columns, duplicated rows,
whole rows of +inf / -inf, and a NaN. Hypothesis draws the structure (seed,
scale, counts); numpy builds the [B, D] array from it, so arrays of 1000 rows
stay cheap to draw and failures still shrink.

Every code path is covered: the mean (c = 0), the unrolled network (B <=
MAX_UNROLLED_ROWS, c <= MAX_NETWORK_C), the two streamed passes (B >
MAX_UNROLLED_ROWS, in blocks of `order_stats.block_rows()` rows and a
remainder), the jnp.sort fallback (c > MAX_NETWORK_C), the median's network
(B <= MAX_NETWORK_SORT) and sort, and the streaming gradients over
micro-batches of 7 examples. The default test shrinks MAX_UNROLLED_ROWS to 8
(so blocks of 8 rows) and MAX_NETWORK_C to 2: same code, same paths, small
programs; B = 8 and 9 straddle the rows boundary, c = 2 and 3 the network /
sort one. `test_real_sizes` (slow) runs the real constants at B in {32, 33,
100, 129, 1000} (the network at its largest, one block and a remainder of
one row, ...) and c in {0, 1, 2, 4, 8, 9}.

Tolerance. The input is float32; the reference sorts the same values in
float64, so the only error is float32 summation (order statistics themselves
are exact selections). A float32 sum of at most B terms, each of magnitude
<= M = max finite |x|, in any order (the matmul of `mean`, a sequential fold,
a scan) is off by at most (B - 1) u B M with u = eps32 / 2 the unit roundoff;
every aggregator divides a sum of at most m <= B kept terms (plus at most two
bound terms in the streamed trimmed mean) by m, so its error is at most about
(B + 3) u M, plus u M for the final division and rounding. We use
ATOL = (B + 4) * eps32 * M, a factor 2 above that bound, rtol = 0. Infinities
and NaN must match exactly (assert_allclose compares them positionally).
"""

import contextlib
import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck  # pylint: disable=g-import-not-at-top
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from coherence_jax import aggregators  # pylint: disable=g-import-not-at-top
from coherence_jax.aggregators import order_stats
from coherence_jax.aggregators import streaming

D = 8  # columns, one per pattern (see `build`)
EPS32 = float(np.finfo(np.float32).eps)
MICROBATCH = 7  # streaming: does not divide most B, so a remainder is folded
SMALL_CONSTS = {'MAX_UNROLLED_ROWS': 8, 'MAX_NETWORK_C': 2}
REAL_CONSTS = {'MAX_UNROLLED_ROWS': order_stats.folds.MAX_UNROLLED_ROWS,
               'MAX_NETWORK_C': order_stats.folds.MAX_NETWORK_C}


# ------------------------------------------------------------- references


def np_reference(kind, x, arg):
  """float64 np.sort-based reference; NaN in a column makes it NaN."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  nan_cols = np.isnan(x).any(0)
  x = np.where(np.isnan(x), 0.0, x)
  with np.errstate(invalid='ignore'):
    s = np.sort(x, axis=0)
    if kind == 'winsorized':
      out = np.clip(s, s[arg], s[n - arg - 1]).mean(0)
    elif kind == 'trimmed':
      out = s[arg:n - arg].mean(0)
    elif kind == 'median_of_means':
      out = np.median(x.reshape((arg, n // arg) + x.shape[1:]).mean(1), 0)
    elif kind == 'median':
      out = np.median(x, 0)
    else:
      raise ValueError(kind)
  return np.where(nan_cols, np.nan, out)


# ------------------------------------------------------------- data


@st.composite
def structures(draw):
  """The random structure of one batch (numpy builds the values)."""
  return dict(
      seed=draw(st.integers(0, 2**32 - 1)),
      # Dyadic scales keep sums exact; the others make them round.
      scale=draw(st.sampled_from([1.0, 0.5, 0.1, 3e-3, 7e4])),
      num_values=draw(st.integers(1, 7)),
      outliers_low=draw(st.integers(0, 4)),
      outliers_high=draw(st.integers(0, 4)),
      nonzeros=draw(st.integers(0, 4)),
      pos_inf_rows=draw(st.integers(0, 11)),
      neg_inf_rows=draw(st.integers(0, 11)),
      duplicate_rows=draw(st.integers(0, 5)),
      all_rows_equal=draw(st.booleans()),
      nan=draw(st.booleans()),
  )


def build(b, spec):
  """A [b, D] float32 batch with ties, constant middles, +-inf rows, NaN."""
  rng = np.random.default_rng(spec['seed'])
  ints = lambda size: rng.integers(-3, 4, size=size).astype(np.float64)
  x = np.empty((b, D))
  x[:, 0] = ints(b)                                       # many ties
  x[:, 1] = rng.choice(np.arange(-3, 4)[:spec['num_values']], size=b)
  x[:, 2] = 1.0                                           # constant middle
  lo, hi = min(spec['outliers_low'], b), min(spec['outliers_high'], b)
  x[:lo, 2] = -2.0 - ints(lo) ** 2
  if hi:
    x[b - hi:, 2] = 5.0 + ints(hi) ** 2
  x[:, 3] = -2.0                                          # all equal
  x[:, 4] = 0.0                                           # sparse
  x[rng.permutation(b)[:spec['nonzeros']], 4] = 3.0
  x[:, 5] = np.where(rng.random(b) < rng.random(), 1.0, -1.0)  # saturated
  x[:, 6] = rng.normal(size=b)                            # no ties
  x[:, 7] = ints(b)
  if spec['nan']:
    x[rng.integers(b), 7] = np.nan
  x = (x * spec['scale']).astype(np.float32)
  for _ in range(spec['duplicate_rows']):
    x[rng.integers(b)] = x[rng.integers(b)]
  if spec['all_rows_equal']:
    x[:] = x[0]
  rows = rng.permutation(b)
  num_pos = min(spec['pos_inf_rows'], b)
  num_neg = min(spec['neg_inf_rows'], b - num_pos)
  x[rows[:num_pos]] = np.inf
  x[rows[num_pos:num_pos + num_neg]] = -np.inf
  return x


def atol_for(x):
  finite = np.abs(x[np.isfinite(x)])
  m = float(finite.max()) if finite.size else 0.0
  return (x.shape[0] + 4) * EPS32 * m


# ------------------------------------------------------------- under test


def cases(b, consts):
  """[(name, kind, arg, fn(x) -> [D])] covering every path at batch size b."""
  out = []
  network_c = consts['MAX_NETWORK_C']
  for c in sorted({0, 1, 2, 4, network_c, network_c + 1}):
    if 2 * c + 1 > b:
      continue
    for kind, tx_fn, stream_fn in (
        ('winsorized', aggregators.winsorized_mean,
         streaming.winsorized_mean_grad),
        ('trimmed', aggregators.trimmed_mean, streaming.trimmed_mean_grad)):
      out.append((f'{kind}_mean({c})', kind, c, _transform(tx_fn(c))))
      out.append((f'{kind}_mean_grad(c={c})', kind, c,
                  functools.partial(_stream, stream_fn, c)))
  groups = [k for k in (1, 2, 3, 4, 5, 17, 20) if b % k == 0]
  for k in groups[-2:]:
    out.append((f'median_of_means({k})', 'median_of_means', k,
                _transform(aggregators.median_of_means(k))))
  out.append(('coordinate_median', 'median', None,
              _transform(aggregators.coordinate_median())))
  return out


def _transform(tx):
  def apply(x):
    params = {'w': jnp.zeros(x.shape[1:], x.dtype)}
    return tx.update({'w': x}, tx.init(params))[0]['w']
  return apply


def _linear_loss(params, batch):
  # Example i's gradient with respect to w is exactly batch['g'][i].
  return batch['g'] @ params['w']


def _stream(stream_fn, c, x):
  params = {'w': jnp.zeros(x.shape[1:], x.dtype)}
  return stream_fn(_linear_loss, params, {'g': x}, c=c,
                   microbatch_size=MICROBATCH)['w']


@contextlib.contextmanager
def patched(consts):
  saved = {k: getattr(order_stats.folds, k) for k in consts}
  for k, v in consts.items():
    setattr(order_stats.folds, k, v)
  try:
    yield
  finally:
    for k, v in saved.items():
      setattr(order_stats.folds, k, v)


@functools.lru_cache(maxsize=None)
def compiled(b, consts_items):
  """One jitted function per (B, constants): every case, one compile."""
  consts = dict(consts_items)
  todo = cases(b, consts)
  names = [(name, kind, arg) for name, kind, arg, _ in todo]
  fns = [fn for *_, fn in todo]
  jitted = jax.jit(lambda x: [fn(x) for fn in fns])

  def run(x):
    with patched(consts):  # constants are read while tracing
      return jitted(x)
  return names, run


def check_all(b, spec, consts):
  x = build(b, spec)
  names, run = compiled(b, tuple(sorted(consts.items())))
  outs = run(jnp.asarray(x))
  atol = atol_for(x)
  for (name, kind, arg), got in zip(names, outs):
    np.testing.assert_allclose(
        np.asarray(got, np.float64), np_reference(kind, x, arg), rtol=0,
        atol=atol, equal_nan=True, err_msg=f'{name} at B={b}, {spec}')


COMMON = dict(deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.data_too_large])


@pytest.mark.parametrize('b', [1, 2, 5, 8, 9, 300])
@settings(max_examples=10, **COMMON)
@given(spec=structures())
def test_every_aggregator_matches_numpy(b, spec):
  check_all(b, spec, SMALL_CONSTS)


@pytest.mark.slow
@pytest.mark.parametrize('b', [32, 33, 100, 129, 1000])
@settings(max_examples=4, **COMMON)
@given(spec=structures())
def test_real_sizes(b, spec):
  check_all(b, spec, REAL_CONSTS)


def test_small_consts_cover_every_path():
  # The default test's sizes straddle each path's boundary.
  rows, net_c = SMALL_CONSTS['MAX_UNROLLED_ROWS'], SMALL_CONSTS['MAX_NETWORK_C']
  cs = {arg for _, kind, arg, _ in cases(300, SMALL_CONSTS) if kind == 'trimmed'}
  assert {0, 1, net_c, net_c + 1} <= cs  # mean, network / two-pass, sort
  assert rows == 8 and MICROBATCH < rows  # B = 8 network, 9 two-pass
  with patched(SMALL_CONSTS):
    assert order_stats.block_rows() == rows  # 9 = one block + a remainder
  assert REAL_CONSTS['MAX_UNROLLED_ROWS'] == 32  # test_real_sizes: B = 32, 33
