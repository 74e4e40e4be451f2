"""Streamed passes over the rows, and the winsorized / trimmed means.

`winsorized_mean` / `trimmed_mean` run the one fused network of networks.py
(`summarize`) for n <= MAX_UNROLLED_ROWS rows and c <= MAX_NETWORK_C,
`jnp.sort` for larger c, and otherwise two streamed passes: the clipping
bounds x_(c+1), x_(n-c) (`threshold_fold`, `thresholds`), then the clipped sum
(`clipped_sum_fold`; trimmed: `trimmed_from_clipped`). Each pass is a
`lax.scan` over blocks of `block_rows` rows (`_fold_blocks`), so code size
does not grow with n. A fold takes its accumulators and returns them, so
callers also fold micro-batch by micro-batch (aggregators/streaming.py) and
combine devices (aggregators/across_devices.py): `extreme_rows` and
`bounds_from_extremes` give bounds that concatenate exactly,
`strict_middle_fold` / `trimmed_from_middle` a trimmed mean from psum-ed
counts. `group_sums` / `group_means` feed the median of means.

The size limits below are read at call time: set them on this module.

Design notes (blocks and registers, the NaN policy of each pass, sharded
rows): docs/design/order_stats.md.
"""

import math
from typing import Tuple

import jax
import jax.numpy as jnp

from coherence_jax import mesh_axes
from coherence_jax import microbatch
from coherence_jax.aggregators.order_stats.networks import _nan_to_all
from coherence_jax.aggregators.order_stats.networks import _select_ascending
from coherence_jax.aggregators.order_stats.networks import _select_descending
from coherence_jax.aggregators.order_stats.networks import summarize
from coherence_jax.aggregators.order_stats.networks import trimmed_from
from coherence_jax.aggregators.order_stats.networks import winsorized_from
from coherence_jax.aggregators.order_stats.rows import LazyRows
from coherence_jax.aggregators.order_stats.rows import _row
from coherence_jax.aggregators.order_stats.rows import materialize
from coherence_jax.aggregators.order_stats.rows import materialized_inputs
from coherence_jax.aggregators.order_stats.rows import mean
from coherence_jax.aggregators.order_stats.rows import replicate_rows
from coherence_jax.aggregators.order_stats.rows import sum_rows

# Above these sizes the unrolled networks cost more to compile than they save.
MAX_NETWORK_C = 8       # winsorized / trimmed mean: c largest + c smallest.
MAX_UNROLLED_ROWS = 32  # one-pass network; longer inputs stream in blocks.
BLOCK_ROWS = 16         # rows per scanned block of the streamed passes,
SMALL_BLOCK_ROWS = 8    # or this many for inputs of at most
SMALL_BLOCK_SIZE = 1 << 17  # this many values per row (`block_rows`).


def vary_like(tree, x):
  """`tree` cast to vary over the mesh axes `x` varies over (inside shard_map).

  A `lax.scan` carry must keep its type: a constant initial carry (invariant)
  folded with rows that vary over a mesh axis would not. No-op outside
  `jax.shard_map` and inside `jax.pmap`.
  """
  axes = tuple(sorted(mesh_axes.tree_varying_axes(x)))
  return mesh_axes.as_varying(tree, axes) if axes else tree


def block_rows(x=None) -> int:
  """Rows per scanned block of the streamed passes over x.

  The code compiled for a block grows with its rows; the loop-carried
  registers XLA copies once per block (a register loop writes its register
  while later loops still read the old one) grow with the values per row.
  So inputs of at most SMALL_BLOCK_SIZE values per row (their registers stay
  in cache) take SMALL_BLOCK_ROWS rows per block, larger ones BLOCK_ROWS
  (measured in benchmarks/README_aggregators.md). x None: BLOCK_ROWS. At
  most MAX_UNROLLED_ROWS.
  """
  rows = BLOCK_ROWS
  if x is not None and math.prod(x.shape[1:]) <= SMALL_BLOCK_SIZE:
    rows = SMALL_BLOCK_ROWS
  return min(rows, MAX_UNROLLED_ROWS)


def _fold_blocks(x, init, fold_block):
  """Folds the rows of x in blocks of `block_rows(x)` (scan + remainder).

  The scan carries the NEXT block, sliced one iteration ahead, so the fold
  reads a plain loop-carried buffer. When the fold read `dynamic_slice`s of
  x (microbatch.microbatched), XLA fused the slice into every register
  loop of 8- and 12-row blocks, which then did not vectorize: 6x slower.
  """
  x = replicate_rows(x)
  init = vary_like(init, x)
  rows, n = block_rows(x), x.shape[0]
  if n <= rows:
    return fold_block(init, x)
  num_full, remainder = divmod(n, rows)

  def block(start, length):  # the start is clamped to n - length
    return jax.tree.map(
        lambda v: jax.lax.dynamic_slice_in_dim(v, start, length, 0), x)

  def body(carry, start):
    acc, rows_now = carry
    return (fold_block(acc, rows_now), block(start + rows, rows)), None

  acc = jax.lax.scan(body, (init, block(0, rows)),
                     jnp.arange(num_full) * rows)[0][0]
  if remainder:
    acc = fold_block(acc, block(num_full * rows, remainder))
  return acc


def threshold_init(shape, dtype, c: int):
  """Empty registers for `threshold_fold`: (c+1 largest, c+1 smallest)."""
  inf = jnp.full(shape, jnp.inf, dtype)
  return (-inf,) * (c + 1), (inf,) * (c + 1)


def threshold_fold(regs, x):
  """Adds the rows of x (array or LazyRows) to threshold registers.

  Two separate register chains (the c+1 largest, the c+1 smallest): XLA:CPU
  gives each output of an elementwise network its own fusion, so the carry is
  kept to registers whose dependency cones are small (register k only needs
  registers 0..k), never a full `Extremes` summary. Compare-and-select
  chains (`_select_descending`): NaN values are left out of the registers,
  so the bounds are those of the non-NaN values; the second pass
  (`clipped_sum_fold`, `strict_middle_fold`) propagates the NaN.
  """
  def fold(regs, rows):
    top, bottom = regs
    for i in range(rows.shape[0]):
      v = _row(rows, i)
      top, _ = _select_descending(top, v)
      bottom, _ = _select_ascending(bottom, v)
    return top, bottom
  return _fold_blocks(x, regs, fold)


def thresholds_from(regs) -> Tuple[jax.Array, jax.Array]:
  """(x_(c+1), x_(n-c)) from `threshold_fold` registers."""
  top, bottom = regs
  return bottom[-1], top[-1]


def thresholds(x, c: int) -> Tuple[jax.Array, jax.Array]:
  """(x_(c+1), x_(n-c)) per coordinate: the clipping bounds of winsorizing.

  Of the non-NaN values (see `threshold_fold`); with fewer than c+1 of
  them, -inf / +inf fill in.
  """
  x = materialized_inputs(x)
  return thresholds_from(
      threshold_fold(threshold_init(x.shape[1:], x.dtype, c), x))


def _insert_sorted(regs: jax.Array, v: jax.Array, descending: bool):
  """Inserts v into registers stacked [k, ...], sorted along the first axis.

  new[k] = max(r[k], min(r[k-1], v)) (descending; r[-1] = +inf), mirrored
  for ascending: the k largest (smallest) of the registers and v. NaN
  propagates to every register.
  """
  if descending:
    head = jnp.full_like(regs[:1], jnp.inf)
    return jnp.maximum(regs, jnp.minimum(jnp.concatenate([head, regs[:-1]]),
                                         v))
  head = jnp.full_like(regs[:1], -jnp.inf)
  return jnp.minimum(regs, jnp.maximum(jnp.concatenate([head, regs[:-1]]), v))


def extreme_rows(x, c: int) -> Tuple[jax.Array, jax.Array]:
  """(the c+1 largest, the c+1 smallest) values per coordinate: [c+1, ...] each.

  A summary that concatenates exactly: for disjoint sets of rows, x_(c+1) and
  x_(n-c) of their union are the (c+1)-th smallest of the concatenated
  `smallest` rows and the (c+1)-th largest of the concatenated `largest`
  rows (`bounds_from_extremes`). With fewer than c+1 rows the summary is
  padded with -inf (largest) and +inf (smallest); a pad never outranks a
  value the union keeps, so the bounds stay exact (when the union has at
  least c+1 values). NaN: a coordinate with a NaN among its values is NaN in
  every row of both arrays.

  A `lax.scan` over the rows with the 2(c+1) stacked registers as its carry
  (about 2(c+1) elementwise ops per value). The unrolled network of
  `threshold_fold` with every register as an output was pathological on
  XLA:CPU (jax 0.10.2, [32, 2e5] float32 at c = 4: 10-20 s to run and
  15-20 s to compile, against 0.17 s and 0.7 s for this scan), and
  `jnp.sort` along the rows was ~40x slower than this scan.

  Args:
    x: [n, ...] array or LazyRows (any n >= 1).
    c: values clipped at each end.

  Returns:
    (largest, smallest), each [c+1, *x.shape[1:]]: largest descending,
    smallest ascending.
  """
  x = replicate_rows(x)
  inf = jnp.full((c + 1,) + tuple(x.shape[1:]), jnp.inf, x.dtype)

  def fold(regs, rows):
    v = _row(rows, 0)
    return (_insert_sorted(regs[0], v, True), _insert_sorted(regs[1], v, False))
  return microbatch.microbatched(fold, x, 1, combine='fold',
                                 init=vary_like((-inf, inf), x))


def bounds_from_extremes(largest: jax.Array, smallest: jax.Array,
                         c: int) -> Tuple[jax.Array, jax.Array]:
  """(x_(c+1), x_(n-c)) of a union of sets from their `extreme_rows`.

  Args:
    largest: the `largest` arrays of the sets' summaries, concatenated along
      the leading axis ([num_sets * (c+1), ...]).
    smallest: their `smallest` arrays, concatenated the same way.
    c: values clipped at each end (the summaries' c).

  Returns:
    (lo, hi): the clipping bounds of winsorizing the union; NaN where any of
    its values is NaN. One `lax.scan` over the rows (see `extreme_rows`).
  """
  inf = jnp.full((c + 1,) + largest.shape[1:], jnp.inf, largest.dtype)

  def step(regs, rows):
    top, bottom = regs
    return (_insert_sorted(top, rows[0], True),
            _insert_sorted(bottom, rows[1], False)), None

  init = vary_like((-inf, inf), (largest, smallest))
  (top, bottom), _ = jax.lax.scan(step, init, (largest, smallest))
  lo, hi = bottom[-1], top[-1]
  nan = jnp.isnan(lo) | jnp.isnan(hi)
  return jnp.where(nan, jnp.nan, lo), jnp.where(nan, jnp.nan, hi)


def clipped_sum_fold(acc, x, lo, hi):
  """acc + sum over rows of clip(row, lo, hi), streamed in blocks (one output).

  Clipped by compare and select (as `_select_descending`, cheaper than
  `max`/`min` on XLA:CPU); NaN propagates from the values (a NaN v is kept
  by both selects) and from the bounds (checked once at the end).
  """
  def fold(acc, rows):
    for i in range(rows.shape[0]):
      v = _row(rows, i)
      v = jnp.where(v < lo, lo, v)
      acc = acc + jnp.where(v > hi, hi, v)
    return acc
  acc = _fold_blocks(x, acc, fold)
  return jnp.where(jnp.isnan(lo) | jnp.isnan(hi), jnp.nan, acc).astype(
      acc.dtype)


def clipped_sum(x, lo: jax.Array, hi: jax.Array) -> jax.Array:
  """Sum over rows of clip(row, lo, hi)."""
  return clipped_sum_fold(jnp.zeros(x.shape[1:], x.dtype), x, lo, hi)


def strict_middle_init(shape, dtype):
  """Empty accumulators for `strict_middle_fold`.

  (sum of values strictly inside (lo, hi) in `dtype`, #values <= lo and
  #values >= hi as int32: counts stay exact for any B, bf16 included).
  """
  count = jnp.zeros(shape, jnp.int32)
  return jnp.zeros(shape, dtype), count, count


def strict_middle_fold(acc, x, lo, hi):
  """Adds (sum of values strictly in (lo, hi), #values <= lo, #values >= hi).

  A NaN value is added to the sum (it is neither <= lo nor >= hi): the sum
  is NaN at the coordinates with a NaN value (the NaN policy; the bounds of
  `thresholds` leave NaN out).
  """
  def fold(acc, rows):
    s, k_lo, k_hi = acc
    for i in range(rows.shape[0]):
      v = _row(rows, i)
      s = s + jnp.where((v <= lo) | (v >= hi), 0, v).astype(s.dtype)
      k_lo = k_lo + (v <= lo).astype(k_lo.dtype)
      k_hi = k_hi + (v >= hi).astype(k_hi.dtype)
    return s, k_lo, k_hi
  return _fold_blocks(x, acc, fold)


def trimmed_from_middle(acc, lo, hi, n: int, c: int) -> jax.Array:
  """Trimmed mean from `strict_middle_fold` accumulators over all n rows.

  lo = x_(c+1), hi = x_(n-c); the kept values are x_(c+1), ..., x_(n-c),
  m = n - 2c of them. If lo < hi they are: every value strictly inside
  (lo, hi), #(v <= lo) - c copies of lo (ranks c+1 .. #(v <= lo)) and
  #(v >= hi) - c copies of hi; both counts are >= 1, so an infinite bound
  enters only when it is kept. If lo == hi every kept value equals lo (a
  value equal to both bounds must not be counted at both: that was a bug).
  """
  s, k_lo, k_hi = acc
  # Counts times bounds in >= float32: a bf16 count is inexact above 256.
  wide = jnp.promote_types(s.dtype, jnp.float32)
  total = (s.astype(wide) + (k_lo - c).astype(wide) * lo.astype(wide)
           + (k_hi - c).astype(wide) * hi.astype(wide))
  out = (total / (n - 2 * c)).astype(s.dtype)
  out = jnp.where(lo == hi, lo, out)
  # NaN policy: NaN bounds, or a NaN value (it was added to s).
  return jnp.where(jnp.isnan(lo) | jnp.isnan(hi) | jnp.isnan(s), jnp.nan, out)


def trimmed_from_clipped(total, lo, hi, n: int, c: int) -> jax.Array:
  """Trimmed mean from the clipped (winsorized) sum of all n values.

  lo = x_(c+1), hi = x_(n-c), total = sum of clip(v, lo, hi) over the n
  values (`clipped_sum_fold`). If lo < hi, total = s + k_lo lo + k_hi hi
  (s: the values strictly inside (lo, hi); k_lo = #(v <= lo), k_hi =
  #(v >= hi)), and the kept values x_(c+1) .. x_(n-c) sum to
  s + (k_lo - c) lo + (k_hi - c) hi = total - c lo - c hi: exact with ties,
  and only kept values (the bounds) are subtracted, never an outlier. One
  accumulator instead of `strict_middle_fold`'s three (one fused loop, not
  three: ~10 % faster at c = 2 and 4 on the CNN's rows). lo == hi: every
  kept value is lo. An infinite bound is a kept value: the mean is lo + hi
  (that infinity, or NaN for -inf and +inf, as numpy). NaN where total or a
  bound is NaN. Pass `total` in >= float32 (a bf16 sum stops counting at
  256); the result has that dtype.
  """
  wide = total.dtype
  lo_w, hi_w = lo.astype(wide), hi.astype(wide)
  out = (total - c * lo_w - c * hi_w) / (n - 2 * c)
  out = jnp.where(jnp.isinf(lo_w) | jnp.isinf(hi_w), lo_w + hi_w, out)
  out = jnp.where(lo == hi, lo_w, out)
  return jnp.where(jnp.isnan(total) | jnp.isnan(lo) | jnp.isnan(hi), jnp.nan,
                   out).astype(wide)


def _sorted_middle(x: jax.Array, c: int):
  n = x.shape[0]
  s = jnp.sort(materialize(x), axis=0)
  return s, sum_rows(s[c:n - c])


def winsorized_mean(x, c: int) -> jax.Array:
  """Per coordinate: clip the n values to [x_(c+1), x_(n-c)], then average.

  x: [n, ...] array or LazyRows. n <= MAX_UNROLLED_ROWS: one fused network
  (`summarize`). Longer: `thresholds`, then the clipped sum (two streamed
  passes over the rows, each a lax.scan over blocks).
  """
  x = replicate_rows(x)
  n = x.shape[0]
  if c == 0:
    return mean(x)
  if c <= MAX_NETWORK_C:
    if n <= MAX_UNROLLED_ROWS:
      return winsorized_from(summarize(x, c), n)
    x = materialized_inputs(x)
    lo, hi = thresholds(x, c)
    return clipped_sum(x, lo, hi) / n
  s, middle = _sorted_middle(x, c)
  return _nan_to_all(x, (middle + c * (s[c] + s[n - c - 1])) / n)


def trimmed_mean(x, c: int) -> jax.Array:
  """Per coordinate: the mean of x_(c+1), ..., x_(n-c).

  x: [n, ...] array or LazyRows. n <= MAX_UNROLLED_ROWS: one fused network
  (`summarize`). Longer: `thresholds`, then the clipped sum in >= float32
  (`trimmed_from_clipped`).
  """
  x = replicate_rows(x)
  n = x.shape[0]
  if c == 0:
    return mean(x)
  if c <= MAX_NETWORK_C:
    if n <= MAX_UNROLLED_ROWS:
      return trimmed_from(summarize(x, c), n)
    x = materialized_inputs(x)
    lo, hi = thresholds(x, c)
    wide = jnp.promote_types(x.dtype, jnp.float32)
    total = clipped_sum_fold(jnp.zeros(x.shape[1:], wide), x, lo, hi)
    return trimmed_from_clipped(total, lo, hi, n, c).astype(x.dtype)
  _, middle = _sorted_middle(x, c)
  return _nan_to_all(x, middle / (n - 2 * c))


def group_sums(x, num_groups: int) -> jax.Array:
  """Sums of `num_groups` contiguous equal groups of rows: [num_groups, ...]."""
  m = x.shape[0] // num_groups
  x = replicate_rows(x)
  if isinstance(x, LazyRows):
    return jnp.stack([jax.tree.map(lambda v: v[g * m:(g + 1) * m], x).sum_rows()
                      for g in range(num_groups)])
  flat = x.reshape(num_groups, m, -1)
  sums = jnp.einsum('m,gmp->gp', jnp.ones((m,), x.dtype), flat,
                    precision=jax.lax.Precision.HIGHEST)
  return sums.reshape((num_groups,) + x.shape[1:])


def group_means(x, num_groups: int) -> jax.Array:
  """Means of `num_groups` contiguous equal groups of rows: [num_groups, ...]."""
  return group_sums(x, num_groups) / (x.shape[0] // num_groups)
