"""Coordinate-wise order statistics along a leading axis, fast on XLA:CPU.

The kernels work on one array `x` of shape [n, ...] and reduce the leading axis.
Small selections use Python-unrolled compare-exchange networks of elementwise
`max`/`min`: XLA fuses the whole network into one loop over the coordinates,
which was 15-30x faster than `jnp.sort` along the leading axis on XLA:CPU (see
benchmarks/README_aggregators.md). Large c (> MAX_NETWORK_C) falls back to `jnp.sort`.

Winsorized and trimmed means are computed from an `Extremes` summary: the c
largest and c smallest values, plus the sum, max and min of every other value
(the "middle"). Values are streamed through the summary one row at a time; an
outlier is never added to the middle sum, so there is no `sum - outliers`
cancellation. Summaries of disjoint sets of rows merge exactly (`merge`), which
is what streaming over micro-batches (robust_grad.py) and, later, devices use.

Inputs may also be `LazyRows` (e.g. per-example Dense-layer gradients kept as
outer-product factors, dense_per_example.py): row i is computed inside the
network, so XLA fuses it into the selection loop and the [n, ...] tensor is
never materialized. Longer inputs (n > MAX_UNROLLED_ROWS) are streamed through
the same network in blocks of rows with `lax.scan`, merging summaries, so the
network's size (compile time) does not grow with n.

NaN policy: NaN propagates. `max`/`min` propagate NaN in XLA, so a NaN in any
of a coordinate's values makes that coordinate's result NaN; the sort fallback
checks explicitly. +-inf are ordinary, ordered values: they are clipped or
trimmed like any other extreme value.
"""

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

# Above these sizes the unrolled networks cost more to compile than they save.
MAX_NETWORK_C = 8       # winsorized / trimmed mean: c largest + c smallest.
MAX_NETWORK_SORT = 16   # full sort of n values (medians of few groups).
MAX_UNROLLED_ROWS = 128  # longer inputs stream through in blocks of rows.


class LazyRows:
  """An [n, ...] array whose rows are computed on demand (duck-typed input).

  Subclasses define `shape`, `dtype`, `row(i)` (static i), `rows(start, size)`
  (a LazyRows of `size` rows from a possibly traced `start`), `sum_rows()` and
  `materialize()`.
  """
  shape: Tuple[int, ...]
  dtype: Any

  def row(self, i: int) -> jax.Array:
    raise NotImplementedError

  def rows(self, start, size: int) -> 'LazyRows':
    raise NotImplementedError

  def sum_rows(self) -> jax.Array:
    raise NotImplementedError

  def materialize(self) -> jax.Array:
    raise NotImplementedError


def _row(x, i: int) -> jax.Array:
  return x.row(i) if isinstance(x, LazyRows) else x[i]


def _take_rows(x, start, size: int):
  if isinstance(x, LazyRows):
    return x.rows(start, size)
  return jax.lax.dynamic_slice_in_dim(x, start, size, 0)


def materialize(x) -> jax.Array:
  """x as a plain array (LazyRows are expanded)."""
  return x.materialize() if isinstance(x, LazyRows) else x


class Extremes(NamedTuple):
  """Order-statistics summary of a set of rows, coordinate-wise.

  Attributes:
    largest: c arrays, the c largest values, descending.
    smallest: c arrays, the c smallest values, ascending.
    middle_sum: sum of all other values.
    middle_max: max of the other values (x_(n-c) of the whole set).
    middle_min: min of the other values (x_(c+1) of the whole set).
  """
  largest: Tuple[jax.Array, ...]
  smallest: Tuple[jax.Array, ...]
  middle_sum: jax.Array
  middle_max: jax.Array
  middle_min: jax.Array


def _insert_descending(regs, v):
  """Inserts v into descending registers; returns (regs, value pushed out)."""
  out = []
  for r in regs:
    out.append(jnp.maximum(r, v))
    v = jnp.minimum(r, v)
  return tuple(out), v


def _insert_ascending(regs, v):
  out = []
  for r in regs:
    out.append(jnp.minimum(r, v))
    v = jnp.maximum(r, v)
  return tuple(out), v


def sort_rows(x: jax.Array) -> Tuple[jax.Array, ...]:
  """The n rows of x sorted descending, coordinate-wise, by an unrolled network.

  For small n only (n^2 elementwise ops). NaN propagates to every output.
  """
  return _sort_first(x, x.shape[0])


def _sort_first(x, k: int) -> Tuple[jax.Array, ...]:
  """Rows 0..k-1 of x sorted descending, coordinate-wise (unrolled)."""
  neg = jnp.full(x.shape[1:], -jnp.inf, x.dtype)
  regs = (neg,) * k
  for i in range(k):
    regs, _ = _insert_descending(regs, _row(x, i))
  return regs


def insert_value(ext: Extremes, v: jax.Array) -> Extremes:
  """Adds one value per coordinate to a complete summary."""
  largest, v = _insert_descending(ext.largest, v)
  smallest, v = _insert_ascending(ext.smallest, v)
  return Extremes(largest, smallest, ext.middle_sum + v,
                  jnp.maximum(ext.middle_max, v), jnp.minimum(ext.middle_min, v))


def insert_rows(ext: Extremes, rows, start: int = 0) -> Extremes:
  """Adds rows start.. of `rows` [n, ...] (array or LazyRows) to a summary.

  Unrolled: use on at most MAX_UNROLLED_ROWS rows (see `summarize`).
  """
  for i in range(start, rows.shape[0]):
    ext = insert_value(ext, _row(rows, i))
  return ext


def _summarize_block(x, c: int) -> Extremes:
  """Summary of all rows of x (n >= 2c, n <= MAX_UNROLLED_ROWS), unrolled."""
  head = _sort_first(x, 2 * c)
  zeros = jnp.zeros(x.shape[1:], x.dtype)
  ext = Extremes(head[:c], tuple(reversed(head[c:])), zeros, zeros - jnp.inf,
                 zeros + jnp.inf)
  return insert_rows(ext, x, 2 * c)


def summarize(x, c: int) -> Extremes:
  """The `Extremes` summary of the rows of x [n, ...]; needs n >= 2c.

  x is an array or `LazyRows`. With n == 2c the middle is empty (sum 0,
  max -inf, min +inf). Up to MAX_UNROLLED_ROWS rows go through one unrolled
  network; more are folded in blocks of that many rows by `lax.scan` (the
  carry is the running summary), then the remaining rows, unrolled.
  """
  n = x.shape[0]
  if n < 2 * c:
    raise ValueError(f'summarize: needs at least 2c = {2 * c} rows, got {n}.')
  if not isinstance(x, LazyRows):
    # Materialize x: otherwise XLA may fuse x's producer (e.g. the per-example
    # gradient's elementwise tail) into the network and recompute it per use.
    x = jax.lax.optimization_barrier(x)
  block = MAX_UNROLLED_ROWS
  if n <= block:
    return _summarize_block(x, c)
  ext = _summarize_block(_take_rows(x, 0, block), c)
  num_full = n // block
  if num_full > 1:
    def fold(ext, i):
      return insert_rows(ext, _take_rows(x, i * block, block)), None
    ext, _ = jax.lax.scan(fold, ext, jnp.arange(1, num_full))
  if n % block:
    ext = insert_rows(ext, _take_rows(x, num_full * block, n % block))
  return ext


def merge(a: Extremes, b: Extremes) -> Extremes:
  """Summary of the union of two disjoint sets of rows (same c)."""
  ext = Extremes(a.largest, a.smallest, a.middle_sum + b.middle_sum,
                 jnp.maximum(a.middle_max, b.middle_max),
                 jnp.minimum(a.middle_min, b.middle_min))
  for v in b.largest + b.smallest:
    ext = insert_value(ext, v)
  return ext


def winsorized_from(ext: Extremes, n: int) -> jax.Array:
  """Winsorized mean of the n summarized values (c = len(ext.largest))."""
  c = len(ext.largest)
  return (ext.middle_sum + c * (ext.middle_min + ext.middle_max)) / n


def trimmed_from(ext: Extremes, n: int) -> jax.Array:
  """Trimmed mean of the n summarized values (c = len(ext.largest))."""
  return ext.middle_sum / (n - 2 * len(ext.largest))


def _sum_rows(x) -> jax.Array:
  """Sum over the leading axis as a ones-vector matmul (faster on XLA:CPU)."""
  if isinstance(x, LazyRows):
    return x.sum_rows()
  flat = x.reshape(x.shape[0], -1)
  ones = jnp.ones((x.shape[0],), x.dtype)
  total = jnp.matmul(ones, flat, precision=jax.lax.Precision.HIGHEST)
  return total.reshape(x.shape[1:])


def mean(x: jax.Array) -> jax.Array:
  """Mean over the leading axis."""
  return _sum_rows(x) / x.shape[0]


def _nan_to_all(x: jax.Array, out: jax.Array) -> jax.Array:
  x = materialize(x)
  return jnp.where(jnp.any(jnp.isnan(x), axis=0), jnp.nan, out)


def _sorted_middle(x: jax.Array, c: int):
  n = x.shape[0]
  s = jnp.sort(materialize(x), axis=0)
  return s, _sum_rows(s[c:n - c])


def winsorized_mean(x: jax.Array, c: int) -> jax.Array:
  """Per coordinate: clip the n values to [x_(c+1), x_(n-c)], then average."""
  n = x.shape[0]
  if c == 0:
    return mean(x)
  if c <= MAX_NETWORK_C:
    return winsorized_from(summarize(x, c), n)
  s, middle = _sorted_middle(x, c)
  return _nan_to_all(x, (middle + c * (s[c] + s[n - c - 1])) / n)


def trimmed_mean(x: jax.Array, c: int) -> jax.Array:
  """Per coordinate: the mean of x_(c+1), ..., x_(n-c)."""
  n = x.shape[0]
  if c == 0:
    return mean(x)
  if c <= MAX_NETWORK_C:
    return trimmed_from(summarize(x, c), n)
  _, middle = _sorted_middle(x, c)
  return _nan_to_all(x, middle / (n - 2 * c))


def median3(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
  """Exact median of three (4 ops, returns one of the inputs; NaN propagates)."""
  return jnp.maximum(jnp.minimum(a, b), jnp.minimum(jnp.maximum(a, b), c))


def median(x: jax.Array) -> jax.Array:
  """Coordinate-wise median over the leading axis (numpy convention)."""
  x = materialize(x)
  n = x.shape[0]
  if n == 1:
    return x[0]
  if n == 2:
    return (x[0] + x[1]) / 2
  if n == 3:
    return median3(x[0], x[1], x[2])
  if n <= MAX_NETWORK_SORT:
    s = sort_rows(x)
  else:
    s = jnp.sort(x, axis=0)
  mid = (s[(n - 1) // 2] + s[n // 2]) / 2 if n % 2 == 0 else s[n // 2]
  return mid if n <= MAX_NETWORK_SORT else _nan_to_all(x, mid)


def group_means(x: jax.Array, num_groups: int) -> jax.Array:
  """Means of `num_groups` contiguous equal groups of rows: [num_groups, ...]."""
  if isinstance(x, LazyRows):
    m = x.shape[0] // num_groups
    return jnp.stack([x.rows(g * m, m).sum_rows() / m
                      for g in range(num_groups)])
  n = x.shape[0]
  m = n // num_groups
  flat = x.reshape(num_groups, m, -1)
  sums = jnp.einsum('m,gmp->gp', jnp.ones((m,), x.dtype), flat,
                    precision=jax.lax.Precision.HIGHEST)
  return (sums / m).reshape((num_groups,) + x.shape[1:])
