"""Coordinate-wise order statistics along a leading axis, fast on XLA:CPU.

The kernels work on one array `x` of shape [n, ...] and reduce the leading
axis. Small selections are Python-unrolled compare-exchange networks of
elementwise ops, which XLA fuses into one loop over the coordinates (15-30x
faster than `jnp.sort` on XLA:CPU); large c (> MAX_NETWORK_C) falls back to
`jnp.sort`. Winsorized and trimmed means come from an `Extremes` summary
(the c largest and c smallest values plus the sum, max and min of the
"middle"), which merges exactly across row sets and devices
(`extreme_rows`, `bounds_from_extremes`). Inputs may be `LazyRows` (e.g.
Dense gradients as outer-product factors), formed inside the network and
never materialized; more than MAX_UNROLLED_ROWS rows are streamed in blocks
with `lax.scan`, so code size does not grow with n. `pack_leaves` makes one
network per packed input, not one per leaf.

NaN propagates (a NaN among a coordinate's values makes its result NaN);
+-inf are ordinary, ordered values, clipped or trimmed like any other.

Design notes (select networks, compile time versus step time, the NaN
policy of each kernel, sharded rows): docs/design/order_stats.md.
"""

import math
from typing import Any, Callable, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from coherence_jax import mesh_axes
from coherence_jax import microbatch
from coherence_jax import reductions

# Above these sizes the unrolled networks cost more to compile than they save.
MAX_NETWORK_C = 8       # winsorized / trimmed mean: c largest + c smallest.
MAX_NETWORK_SORT = 16   # full sort of n values (medians of few groups).
MAX_UNROLLED_ROWS = 32  # one-pass network; longer inputs stream in blocks.
BLOCK_ROWS = 16         # rows per scanned block of the streamed passes,
SMALL_BLOCK_ROWS = 8    # or this many for inputs of at most
SMALL_BLOCK_SIZE = 1 << 17  # this many values per row (`block_rows`).
PACK_MAX_SIZE = 1 << 15  # leaves of at most this many values per row share
                         # one network (`pack_leaves`).


class LazyRows:
  """An [n, ...] array whose rows are computed on demand (duck-typed input).

  Subclasses are pytrees whose leaves share the leading axis n (so they can be
  sliced into blocks of rows like a batch) and define `shape`, `dtype`,
  `row(i)` (static i), `sum_rows()` and `materialize()`.
  """
  shape: Tuple[int, ...]
  dtype: Any

  def row(self, i: int) -> jax.Array:
    raise NotImplementedError

  def sum_rows(self) -> jax.Array:
    raise NotImplementedError

  def materialize(self) -> jax.Array:
    raise NotImplementedError


def _row(x, i: int) -> jax.Array:
  return x.row(i) if isinstance(x, LazyRows) else x[i]


def is_lazy(x) -> bool:
  """Whether x is a `LazyRows` (rows computed on demand)."""
  return isinstance(x, LazyRows)


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


def materialized_inputs(x):
  """An array x behind an optimization barrier (LazyRows pass unchanged).

  Otherwise XLA may fuse x's producer (e.g. the per-example gradient's
  elementwise tail) into the network and recompute it for every use.
  Rows sharded over an Explicit mesh axis are replicated first
  (`replicate_rows`).
  """
  x = replicate_rows(x)
  return x if isinstance(x, LazyRows) else jax.lax.optimization_barrier(x)


def replicate_rows(x):
  """x with its leading (row) axis unsharded on an Explicit-axis mesh.

  Under `jax.jit` with a mesh whose axes are Explicit (the default of
  `jax.make_mesh` in jax 0.10), an array placed with
  `NamedSharding(mesh, P('data'))` carries its sharding in its type, and
  slicing single rows of the sharded axis raises a ShardingTypeError. The
  kernels here read rows one by one, so such leaves are resharded to a
  replicated leading axis (an all_gather of the rows; the other axes keep
  their sharding). No-op for unsharded rows, Auto axes and inside
  `jax.shard_map` (a local block). To aggregate without gathering the rows,
  use the aggregators' `axis_name` inside `jax.shard_map`.

  Args:
    x: an array or LazyRows (each of its leaves is resharded).

  Returns:
    x, every leaf's leading axis replicated.
  """
  def one(leaf):
    sharding = getattr(jax.typeof(leaf), 'sharding', None)
    spec = tuple(getattr(sharding, 'spec', None) or ())
    if not spec or spec[0] is None:
      return leaf
    return jax.sharding.reshard(leaf, jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(None, *spec[1:])))
  return jax.tree.map(one, x)


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


def sum_rows(x) -> jax.Array:
  """Sum over the leading axis as a ones-vector matmul (faster on XLA:CPU)."""
  if isinstance(x, LazyRows):
    return x.sum_rows()
  return reductions.sum_over_examples(x)



def mean(x: jax.Array) -> jax.Array:
  """Mean over the leading axis."""
  return sum_rows(x) / x.shape[0]


def _nan_to_all(x: jax.Array, out: jax.Array) -> jax.Array:
  x = materialize(x)
  return jnp.where(jnp.any(jnp.isnan(x), axis=0), jnp.nan, out)


def _sorted_middle(x: jax.Array, c: int):
  n = x.shape[0]
  s = jnp.sort(materialize(x), axis=0)
  return s, sum_rows(s[c:n - c])


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


def _pack_plan(row_shapes, dtypes) -> List[List[int]]:
  """Groups of leaf indices, one per input (see `pack_leaves`)."""
  plan, small = [], {}
  for i, (shape, dtype) in enumerate(zip(row_shapes, dtypes)):
    if math.prod(shape) <= PACK_MAX_SIZE:
      small.setdefault(jnp.dtype(dtype), []).append(i)
    else:
      plan.append([i])
  return plan + list(small.values())


def packed_shapes(tree) -> List[jax.ShapeDtypeStruct]:
  """Shape and dtype of one row of each of `pack_leaves(tree)`'s inputs.

  `tree` may hold anything with `.shape` ([n, ...]) and `.dtype`, e.g.
  `jax.ShapeDtypeStruct`s (for the carries of a scan over blocks of rows).
  """
  leaves = jax.tree.leaves(tree, is_leaf=is_lazy)
  shapes = [tuple(leaf.shape[1:]) for leaf in leaves]
  dtypes = [leaf.dtype for leaf in leaves]
  return [jax.ShapeDtypeStruct(shapes[group[0]] if len(group) == 1 else
                               (sum(math.prod(shapes[i]) for i in group),),
                               dtypes[group[0]])
          for group in _pack_plan(shapes, dtypes)]


def pack_leaves(tree) -> Tuple[List[Any], Callable[[List[Any]], Any]]:
  """The leaves of `tree` [n, ...] as few inputs, one network each.

  Compile time grows with the number of unrolled networks, one per input, so
  the leaves with at most PACK_MAX_SIZE values per row are flattened and
  concatenated along their values, one input per dtype (LazyRows among them
  are materialized: n x at most PACK_MAX_SIZE values). Larger leaves stay
  inputs of their own (LazyRows keep their rows lazy). A coordinate-wise
  reduction of the packed input equals the reductions of its leaves.

  Args:
    tree: pytree of arrays or LazyRows sharing the leading axis n.

  Returns:
    (inputs, unpack): `inputs` a list of arrays / LazyRows [n, ...] (rows
    shaped as `packed_shapes(tree)`); `unpack(outputs)` takes one reduced
    output per input (shaped `input.shape[1:]`) and returns them in `tree`'s
    structure.

  Example:
    >>> tree = {'b': jnp.ones((4, 2)), 'w': jnp.ones((4, 3, 2))}
    >>> inputs, unpack = pack_leaves(tree)
    >>> [x.shape for x in inputs]
    [(4, 8)]
    >>> jax.tree.map(jnp.shape, unpack([x.sum(0) for x in inputs]))
    {'b': (2,), 'w': (3, 2)}
  """
  leaves = jax.tree.leaves(tree, is_leaf=is_lazy)
  leaves = [replicate_rows(leaf) for leaf in leaves]
  plan = _pack_plan([leaf.shape[1:] for leaf in leaves],
                    [leaf.dtype for leaf in leaves])
  inputs = [leaves[group[0]] if len(group) == 1 else jnp.concatenate(
      [materialize(leaves[i]).reshape(leaves[i].shape[0], -1) for i in group],
      axis=1) for group in plan]
  return inputs, unpacker(tree)


def unpacker(tree) -> Callable[[List[Any]], Any]:
  """`pack_leaves(tree)`'s unpack, from shapes and dtypes only.

  `tree` may hold anything with `.shape` ([n, ...]) and `.dtype`.
  """
  leaves, treedef = jax.tree.flatten(tree, is_leaf=is_lazy)
  shapes = [tuple(leaf.shape[1:]) for leaf in leaves]
  plan = _pack_plan(shapes, [leaf.dtype for leaf in leaves])

  def unpack(outputs):
    out = [None] * len(leaves)
    for group, output in zip(plan, outputs):
      if len(group) == 1:
        out[group[0]] = output
        continue
      start = 0
      for i in group:
        size = math.prod(shapes[i])
        out[i] = output[start:start + size].reshape(shapes[i])
        start += size
    return jax.tree.unflatten(treedef, out)

  return unpack


def reduce_leaves(fn: Callable[[Any], jax.Array], tree):
  """`fn` (a coordinate-wise reduction of [n, ...]) of every leaf, packed."""
  inputs, unpack = pack_leaves(tree)
  return unpack([fn(x) for x in inputs])


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
