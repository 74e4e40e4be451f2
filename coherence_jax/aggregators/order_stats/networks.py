"""Unrolled compare-exchange networks: `Extremes` summaries, sorts, medians.

Small selections are Python-unrolled compare-exchange networks of elementwise
ops, which XLA fuses into one loop over the coordinates (15-30x faster than
`jnp.sort` on XLA:CPU). `summarize` gives the `Extremes` summary of up to
`folds.MAX_UNROLLED_ROWS` rows (the c largest and c smallest values plus the
sum, max and min of the "middle"); summaries `merge` exactly across disjoint
row sets, and `winsorized_from` / `trimmed_from` read the means off one.
`sort_rows` and `median` sort few rows (more than MAX_NETWORK_SORT: `jnp.sort`).
The register chains (`_insert_*`: NaN propagates; `_select_*`: compare and
select, a NaN is pushed out) are also the steps of the streamed passes
(folds.py).

NaN propagates (a NaN among a coordinate's values makes its result NaN);
+-inf are ordinary, ordered values, clipped or trimmed like any other.

Design notes (select networks, compile time versus step time, the NaN policy
of each kernel): docs/design/order_stats.md.
"""

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

from coherence_jax.aggregators.order_stats.rows import _row
from coherence_jax.aggregators.order_stats.rows import materialize
from coherence_jax.aggregators.order_stats.rows import materialized_inputs
from coherence_jax.aggregators.order_stats.rows import replicate_rows

# Above this size the unrolled sort costs more to compile than it saves.
MAX_NETWORK_SORT = 16   # full sort of n values (medians of few groups).


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


def _select_descending(regs, v):
  """`_insert_descending` by compare and select; a NaN v is pushed out.

  One compare and two selects per register. XLA:CPU lowers NaN-propagating
  `max`/`min` to several instructions each; this form ran the threshold
  pass 2.5x faster (benchmarks/README_aggregators.md). NaN never enters the
  registers (r < NaN is false: r stays, the NaN moves on), so a chain of
  them holds the order statistics of the non-NaN values; callers make NaN
  propagate another way (`insert_value`: into the middle sum).
  """
  out = []
  for r in regs:  # lax, not jnp: the networks trace thousands of these ops
    swap = jax.lax.lt(r, v)
    out.append(jax.lax.select(swap, v, r))
    v = jax.lax.select(swap, r, v)
  return tuple(out), v


def _select_ascending(regs, v):
  """`_insert_ascending` by compare and select; a NaN v is pushed out."""
  out = []
  for r in regs:
    swap = jax.lax.gt(r, v)
    out.append(jax.lax.select(swap, v, r))
    v = jax.lax.select(swap, r, v)
  return tuple(out), v


def _nan_only(v: jax.Array) -> jax.Array:
  """NaN where v is NaN, else 0 (adds a NaN flag into a sum)."""
  return jnp.where(jnp.isnan(v), v, jnp.zeros_like(v))


def sort_rows(x: jax.Array) -> Tuple[jax.Array, ...]:
  """The n rows of x sorted descending, coordinate-wise, by an unrolled network.

  For small n only (n^2 elementwise ops). NaN propagates to every output.
  """
  return _sort_first(replicate_rows(x), x.shape[0], _insert_descending)


def _sort_first(x, k: int, insert) -> Tuple[jax.Array, ...]:
  """Rows 0..k-1 of x sorted descending, coordinate-wise (unrolled).

  `insert` is `_insert_descending` (NaN propagates to every register) or
  `_select_descending` (NaN rows are dropped, -inf fills their registers).
  """
  neg = jnp.full(x.shape[1:], -jnp.inf, x.dtype)
  regs = (neg,) * k
  for i in range(k):
    regs, _ = insert(regs, _row(x, i))
  return regs


def insert_value(ext: Extremes, v: jax.Array) -> Extremes:
  """Adds one value per coordinate to a complete summary.

  A NaN v passes both register chains (`_select_descending`) and makes
  `middle_sum` NaN.
  """
  largest, v = _select_descending(ext.largest, v)
  smallest, v = _select_ascending(ext.smallest, v)
  return Extremes(
      largest, smallest, ext.middle_sum + v,
      jax.lax.select(jax.lax.lt(ext.middle_max, v), v, ext.middle_max),
      jax.lax.select(jax.lax.gt(ext.middle_min, v), v, ext.middle_min))


def insert_rows(ext: Extremes, rows, start: int = 0) -> Extremes:
  """Adds rows start.. of `rows` [n, ...] (array or LazyRows) to a summary.

  Unrolled: use on at most MAX_UNROLLED_ROWS rows (see `summarize`).
  """
  rows = replicate_rows(rows)
  for i in range(start, rows.shape[0]):
    ext = insert_value(ext, _row(rows, i))
  return ext


def _summarize_block(x, c: int) -> Extremes:
  """Summary of all rows of x (n >= 2c, n <= MAX_UNROLLED_ROWS), unrolled.

  The first 2c rows are sorted into the registers; a NaN among them is
  dropped there, so the middle sum starts as NaN at its coordinates.
  """
  head = _sort_first(x, 2 * c, _select_descending)
  zeros = jnp.zeros(x.shape[1:], x.dtype)
  nan = zeros
  for i in range(2 * c):
    nan = nan + _nan_only(_row(x, i))
  ext = Extremes(head[:c], tuple(reversed(head[c:])), nan, zeros - jnp.inf,
                 zeros + jnp.inf)
  return insert_rows(ext, x, 2 * c)


def summarize(x, c: int) -> Extremes:
  """The `Extremes` summary of the rows of x [n, ...]; needs n >= 2c.

  x is an array or `LazyRows`; the network is unrolled over all n rows (keep
  n <= MAX_UNROLLED_ROWS; `merge` summaries of blocks for more). With n == 2c
  the middle is empty (sum 0, max -inf, min +inf). Use the summary's fields
  in ONE expression (e.g. `winsorized_from`): XLA:CPU computes each output
  array of an elementwise network in its own fusion, recomputing the network.
  NaN: a coordinate with a NaN among its values has a NaN `middle_sum` (its
  other fields are then unspecified), so `winsorized_from` and
  `trimmed_from` are NaN there.
  """
  n = x.shape[0]
  if n < 2 * c:
    raise ValueError(f'summarize: needs at least 2c = {2 * c} rows, got {n}.')
  return _summarize_block(materialized_inputs(x), c)


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


def _nan_to_all(x: jax.Array, out: jax.Array) -> jax.Array:
  x = materialize(x)
  return jnp.where(jnp.any(jnp.isnan(x), axis=0), jnp.nan, out)


def median3(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
  """Exact median of three (4 ops, returns one of the inputs; NaN propagates)."""
  return jnp.maximum(jnp.minimum(a, b), jnp.minimum(jnp.maximum(a, b), c))


def median(x: jax.Array) -> jax.Array:
  """Coordinate-wise median over the leading axis (numpy convention)."""
  x = materialize(replicate_rows(x))
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
