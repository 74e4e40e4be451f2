"""Exact robust aggregation across devices: exchange summaries, not examples.

Inside `jax.shard_map` with the batch sharded over a mesh axis (or inside
`jax.pmap`), each of the D devices holds its local per-example updates
[b, ...]; the GLOBAL batch is their concatenation in device order (device d
holds rows d*b .. (d+1)*b - 1, B = b * D; B must be a multiple of D, and the
checks 2c + 1 <= B, k divides B use the global B). Every function here
returns exactly what the single-device aggregator returns on the global
batch (up to the order of floating-point additions), the same on every
device: invariant over the axis, so it may leave `jax.shard_map` with
`out_specs=P()`.

Winsorized / trimmed means have three exact schemes (`SCHEMES`):
'all_to_all_rows' and 'all_to_all_summaries' hand the device that owns a
slice of the coordinates every device's rows of it, or their summaries (the
c+1 largest and smallest values and the sum of the middle), and all_gather
the results; 'gather_summaries' all-gathers every summary. `choose_scheme`
picks the smallest exchange: (min(b, 2c + 3) + 1) * P values per device for
D >= 2, whatever D. Median of means exchanges chunk sums
(`median_of_means_scheme`), the coordinate median rows or factors
(`median_scheme`), global clipping bounds alone `global_bounds`.

The schemes, their communication volumes (checked against the compiled HLO)
and ResNet-50 figures: docs/design/across_devices.md.
"""

import math
from typing import Callable, List, Sequence

import jax
import jax.numpy as jnp

from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree
from coherence_jax.aggregators import order_stats

# Exact schemes of the distributed winsorized / trimmed mean
# (docs/design/across_devices.md), in the order `choose_scheme` prefers on a
# tie.
SCHEMES = ('all_to_all_rows', 'all_to_all_summaries', 'gather_summaries')
BOUNDS_SCHEMES = ('all_to_all', 'gather')


def check_axis_name_type(axis_name: mesh_axes.AxisName, name: str) -> None:
  """`axis_name` is None, a str or a non-empty tuple / list of str.

  Raises:
    ValueError: naming `axis_name` and the calling transform.
  """
  names = mesh_axes.axis_names(axis_name)
  if axis_name is not None and (
      not names or not all(isinstance(n, str) for n in names)):
    raise ValueError(
        f'axis_name: {name} got {axis_name!r}; pass the mesh axis name (str) '
        'the batch is sharded over inside jax.shard_map / jax.pmap, a tuple '
        'of them, or None on one device.')


def num_devices(axis_name: mesh_axes.AxisName) -> int:
  """Number of devices D along `axis_name` (checked to be bound).

  Raises:
    ValueError: an axis that is not bound (not inside a shard_map / pmap over
      it); the message lists the bound axes.
  """
  mesh_axes.check_axis_name(axis_name, None)
  return math.prod(jax.lax.axis_size(n) for n in mesh_axes.axis_names(
      axis_name))


def check_c_fits(c: int, local_size: int, axis_name: mesh_axes.AxisName,
                 name: str) -> int:
  """2c + 1 <= B = local_size * D; returns B.

  Raises:
    ValueError: 2c + 1 > B (naming B, b and D), or an unbound axis.
  """
  devices = num_devices(axis_name)
  size = local_size * devices
  if 2 * c + 1 > size:
    raise ValueError(
        f'{name}: c={c} needs at least 2c+1 = {2 * c + 1} examples, got '
        f'B={size} ({local_size} per device x {devices} devices along '
        f'axis_name={axis_name!r}); use c <= {(size - 1) // 2} or a larger '
        'batch.')
  return size


def values_per_coordinate(scheme: str, local_size: int, c: int, devices: int,
                          trimmed: bool = False) -> int:
  """Values one device receives per coordinate under `scheme` (docstring).

  Args:
    scheme: one of `SCHEMES`.
    local_size: b, rows per device.
    c: values clipped (trimmed) at each end.
    devices: D.
    trimmed: the trimmed mean (its 'gather_summaries' psum carries 3 values).

  Returns:
    all_to_all + all_gather (+ psum) output values per coordinate, padding
    not counted.

  Example:
    >>> [values_per_coordinate(s, 4, 4, 256) for s in SCHEMES]
    [5, 12, 2561]
  """
  if scheme == 'all_to_all_rows':
    return local_size + 1
  if scheme == 'all_to_all_summaries':
    return 2 * c + 4
  if scheme == 'gather_summaries':
    return 2 * (c + 1) * devices + (3 if trimmed else 1)
  raise ValueError(f'scheme: got {scheme!r}; pass one of {SCHEMES}.')


def choose_scheme(local_size: int, c: int, devices: int,
                  trimmed: bool = False) -> str:
  """The scheme receiving the fewest values per coordinate.

  'all_to_all_summaries' needs b >= 2c + 1 local rows (a local middle); with
  fewer, 'all_to_all_rows' is cheaper anyway (b < 2c + 4). Ties go to the
  first in `SCHEMES` (rows: the single-device reduction itself).

  Args:
    local_size: b, rows per device.
    c: values clipped (trimmed) at each end.
    devices: D.
    trimmed: the trimmed mean.

  Returns:
    One of `SCHEMES`: for D >= 2 'all_to_all_rows' when b <= 2c + 3, else
    'all_to_all_summaries'.

  Example:
    >>> [choose_scheme(b, 4, d) for b, d in ((128, 8), (16, 64), (4, 256))]
    ['all_to_all_summaries', 'all_to_all_summaries', 'all_to_all_rows']
  """
  usable = [s for s in SCHEMES
            if s != 'all_to_all_summaries' or local_size >= 2 * c + 1]
  return min(usable, key=lambda s: values_per_coordinate(
      s, local_size, c, devices, trimmed))


def bounds_scheme(c: int, devices: int) -> str:
  """`global_bounds`' scheme: the one receiving fewer values per coordinate.

  'all_to_all': 2(c+1) + 2 (extremes of one slice, then the bounds of all);
  'gather': 2(c+1) * D. Ties: 'gather' (one collective instead of two).

  Example:
    >>> bounds_scheme(4, 1), bounds_scheme(4, 8)
    ('gather', 'all_to_all')
  """
  return ('all_to_all' if 2 * (c + 1) + 2 < 2 * (c + 1) * devices
          else 'gather')


def _check_scheme(scheme: str, local_size: int, c: int) -> None:
  if scheme not in SCHEMES:
    raise ValueError(f'scheme: got {scheme!r}; pass one of {SCHEMES}.')
  if scheme == 'all_to_all_summaries' and local_size < 2 * c + 1:
    raise ValueError(
        f'scheme: all_to_all_summaries needs b >= 2c+1 = {2 * c + 1} rows per '
        f'device, got b={local_size}; use all_to_all_rows.')


def _leading_size(updates: PyTree) -> int:
  leaves = jax.tree.leaves(updates, is_leaf=order_stats.is_lazy)
  return leaves[0].shape[0]


def _map(fn, updates, *rest):
  """jax.tree.map over the leaves of `updates` (LazyRows are leaves)."""
  return jax.tree.map(fn, updates, *rest, is_leaf=order_stats.is_lazy)


def _gather(tree, axis_name):
  """All rows of every device, in device order, invariant over the axis."""
  return jax.lax.all_gather(tree, axis_name, axis=0, tiled=True,
                            to='invarying')


def _padded(size: int, devices: int) -> int:
  """`size` rounded up to a multiple of `devices`."""
  return -(-size // devices) * devices


def exchange(arrays: Sequence[jax.Array],
             reduce_slice: Callable[[jax.Array], jax.Array],
             axis_name: mesh_axes.AxisName) -> List[jax.Array]:
  """Each device reduces one slice of the coordinates; all get every result.

  The arrays of one dtype are concatenated along their coordinates, padded
  with zeros to a multiple of D and split into D slices; one `all_to_all`
  gives device d every device's rows of slice d, `reduce_slice` reduces
  them and one tiled `all_gather` returns all coordinates to every device.
  Exact when `reduce_slice` is coordinate-wise (padding is reduced on its
  own coordinates and dropped).

  Args:
    arrays: local [r, n_i] arrays varying over `axis_name` (one r per dtype).
    reduce_slice: maps the received [D, r, m] (device order) to [k, m].
    axis_name: the mesh axis (or axes) the rows are sharded over.

  Returns:
    [k, n_i] per array, invariant over `axis_name`. Communication per
    device: r * n + k * n values for the n (padded) coordinates of a dtype.
  """
  devices = num_devices(axis_name)
  groups = {}
  for i, a in enumerate(arrays):
    groups.setdefault(jnp.dtype(a.dtype), []).append(i)
  out = [None] * len(arrays)
  for index in groups.values():
    sizes = [arrays[i].shape[1] for i in index]
    flat = jnp.concatenate([arrays[i] for i in index], axis=1)
    rows, size = flat.shape
    flat = jnp.pad(flat, ((0, 0), (0, _padded(size, devices) - size)))
    got = jax.lax.all_to_all(flat, axis_name, 1, 0, tiled=True)
    reduced = reduce_slice(got.reshape(devices, rows, -1))
    full = jax.lax.all_gather(reduced, axis_name, axis=1, tiled=True,
                              to='invarying')
    start = 0
    for i, n in zip(index, sizes):
      out[i] = full[:, start:start + n]
      start += n
  return out


def _bounds_of_slice(got: jax.Array, c: int) -> jax.Array:
  """[2, m] (lo, hi) from the received [D, 2(c+1), m] extremes."""
  m = got.shape[-1]
  lo, hi = order_stats.bounds_from_extremes(
      got[:, :c + 1].reshape(-1, m), got[:, c + 1:].reshape(-1, m), c)
  return jnp.stack([lo, hi])


def global_bounds(like: PyTree, extremes: PyTree, c: int,
                  axis_name: mesh_axes.AxisName,
                  scheme: str = None) -> PyTree:
  """Global clipping bounds from each device's `extreme_rows` summaries.

  Args:
    like: a pytree whose leaves (LazyRows count as leaves) stand for the
      leaves of the summaries (the updates, or the params).
    extremes: `like`'s structure with a (largest, smallest) pair of
      [c+1, ...] arrays per leaf (`order_stats.extreme_rows` of the local
      rows).
    c: values clipped at each end.
    axis_name: the mesh axis (or axes) the rows are sharded over.
    scheme: one of `BOUNDS_SCHEMES`; None: `bounds_scheme(c, D)`.

  Returns:
    `like`'s structure with (lo, hi) = (x_(c+1), x_(B-c)) of the global
    batch per leaf, invariant over `axis_name`. Communication per
    coordinate: 'all_to_all' 2(c+1) + 2 values, 'gather' 2(c+1) * D.
  """
  scheme = scheme or bounds_scheme(c, num_devices(axis_name))
  extremes = mesh_axes.as_varying(extremes, axis_name)
  if scheme == 'gather':
    gathered = _gather(extremes, axis_name)
    return _map(lambda _, pair: order_stats.bounds_from_extremes(
        pair[0], pair[1], c), like, gathered)
  if scheme != 'all_to_all':
    raise ValueError(f'scheme: got {scheme!r}; pass one of {BOUNDS_SCHEMES}.')
  treedef = jax.tree.structure(like, is_leaf=order_stats.is_lazy)
  pairs = treedef.flatten_up_to(extremes)
  flat = [jnp.concatenate([a.reshape(c + 1, -1), b.reshape(c + 1, -1)])
          for a, b in pairs]
  bounds = exchange(flat, lambda got: _bounds_of_slice(got, c), axis_name)
  return treedef.unflatten(
      [(lh[0].reshape(a.shape[1:]), lh[1].reshape(a.shape[1:]))
       for lh, (a, _) in zip(bounds, pairs)])


def mean(updates: PyTree, axis_name: mesh_axes.AxisName) -> PyTree:
  """Mean over the global batch: one psum of the local sums."""
  updates = mesh_axes.as_varying(updates, axis_name)
  size = _leading_size(updates) * num_devices(axis_name)
  sums = jax.lax.psum(_map(order_stats.sum_rows, updates), axis_name)
  return jax.tree.map(lambda s: s / size, sums)


def _zeros_like_rows(x):
  return order_stats.vary_like(jnp.zeros(x.shape[1:], x.dtype), x)


def extremes_and_middle(x, c: int):
  """x's `extreme_rows` and the sum of its values of ranks c+1 .. n-c.

  Needs n >= 2c + 1. The middle sum adds the values strictly inside the
  local bounds (x_(c+1), x_(n-c)) and the ties at them
  (`order_stats.strict_middle_fold`): no extreme value is added and then
  subtracted, and +-inf at a bound enters only when it is kept.

  Args:
    x: [n, ...] array or LazyRows.
    c: values left out at each end.

  Returns:
    (largest, smallest, middle): x's `extreme_rows` ([c+1, ...] each) and
    the middle sum [...] in x's dtype.
  """
  n = x.shape[0]
  largest, smallest = order_stats.extreme_rows(x, c)
  lo, hi = smallest[c], largest[c]
  init = order_stats.vary_like(
      order_stats.strict_middle_init(x.shape[1:], x.dtype), x)
  s, k_lo, k_hi = order_stats.strict_middle_fold(init, x, lo, hi)
  wide = jnp.promote_types(s.dtype, jnp.float32)
  total = (s.astype(wide) + (k_lo - c).astype(wide) * lo.astype(wide)
           + (k_hi - c).astype(wide) * hi.astype(wide))
  total = jnp.where(lo == hi, (n - 2 * c) * lo.astype(wide), total)
  return largest, smallest, total.astype(s.dtype)


def _local_rows(x, c: int, scheme: str) -> jax.Array:
  """What one input contributes to the all_to_all: [r, n].

  The schemes: docs/design/across_devices.md.
  """
  if scheme == 'all_to_all_rows':
    x = order_stats.materialize(x)
    return x.reshape(x.shape[0], -1)
  largest, smallest, middle = extremes_and_middle(x, c)
  return jnp.concatenate([largest.reshape(c + 1, -1),
                          smallest.reshape(c + 1, -1), middle.reshape(1, -1)])


def _winsorized_sum_of_summaries(got: jax.Array, c: int):
  """(clipped sum, lo, hi) of a slice from its [D, 2c+3, m] summaries."""
  m = got.shape[-1]
  lo, hi = order_stats.bounds_from_extremes(
      got[:, :c + 1].reshape(-1, m), got[:, c + 1:2 * c + 2].reshape(-1, m),
      c)
  outer = jnp.concatenate([got[:, :c], got[:, c + 1:2 * c + 1]],
                          axis=1).reshape(-1, m)
  middles = got[:, 2 * c + 2]
  total = order_stats.clipped_sum(outer, lo, hi) + jnp.sum(middles, axis=0)
  return total, lo, hi


def _trimmed_from_winsorized(total, lo, hi, size: int, c: int) -> jax.Array:
  """Trimmed mean from the winsorized sum: (total - c*lo - c*hi) / (B - 2c).

  lo == hi: lo. An infinite bound is a kept value: the mean is lo + hi (the
  infinity, or NaN for -inf and +inf), as `order_stats.trimmed_from_middle`.
  """
  wide = jnp.promote_types(total.dtype, jnp.float32)
  lo_w, hi_w = lo.astype(wide), hi.astype(wide)
  out = (total.astype(wide) - c * lo_w - c * hi_w) / (size - 2 * c)
  out = jnp.where(jnp.isinf(lo_w) | jnp.isinf(hi_w), lo_w + hi_w, out)
  out = jnp.where(lo == hi, lo_w, out)
  return jnp.where(jnp.isnan(lo) | jnp.isnan(hi), jnp.nan, out).astype(
      total.dtype)


def _order_statistic(updates: PyTree, c: int, axis_name, trimmed: bool,
                     scheme) -> PyTree:
  updates = mesh_axes.as_varying(updates, axis_name)
  local = _leading_size(updates)
  devices = num_devices(axis_name)
  size = local * devices
  scheme = scheme or choose_scheme(local, c, devices, trimmed)
  _check_scheme(scheme, local, c)
  inputs, unpack = order_stats.pack_leaves(updates)
  if scheme == 'gather_summaries':
    bounds = global_bounds(
        inputs, [order_stats.extreme_rows(x, c) for x in inputs], c,
        axis_name, scheme='gather')
    return unpack((_trimmed_psum if trimmed else _winsorized_psum)(
        inputs, bounds, size, c, axis_name))

  def reduce_slice(got):
    if scheme == 'all_to_all_rows':
      fn = order_stats.trimmed_mean if trimmed else order_stats.winsorized_mean
      return fn(got.reshape(size, -1), c)[None]
    total, lo, hi = _winsorized_sum_of_summaries(got, c)
    if trimmed:
      return _trimmed_from_winsorized(total, lo, hi, size, c)[None]
    return (total / size)[None]

  outs = exchange([_local_rows(x, c, scheme) for x in inputs], reduce_slice,
                  axis_name)
  return unpack([o[0].reshape(x.shape[1:]) for o, x in zip(outs, inputs)])


def _winsorized_psum(inputs, bounds, size, c, axis_name):
  """'gather_summaries': psum of the locally clipped sums, / B."""
  del c
  sums = [order_stats.clipped_sum_fold(_zeros_like_rows(x), x, lo, hi)
          for x, (lo, hi) in zip(inputs, bounds)]
  return [s / size for s in jax.lax.psum(sums, axis_name)]


def _trimmed_psum(inputs, bounds, size, c, axis_name):
  """'gather_summaries': psum of the strict-middle sums and tie counts."""

  def local(x, lo, hi):
    init = order_stats.vary_like(
        order_stats.strict_middle_init(x.shape[1:], x.dtype), x)
    return order_stats.strict_middle_fold(init, x, lo, hi)

  acc = jax.lax.psum([local(x, lo, hi) for x, (lo, hi) in zip(inputs, bounds)],
                     axis_name)
  return [order_stats.trimmed_from_middle(a, lo, hi, size, c)
          for a, (lo, hi) in zip(acc, bounds)]


def winsorized_mean(updates: PyTree, c: int,
                    axis_name: mesh_axes.AxisName,
                    scheme: str = None) -> PyTree:
  """Winsorized mean of the global batch (docs/design/across_devices.md).

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    c: values clipped at each end, per coordinate (2c + 1 <= B).
    axis_name: the mesh axis (or axes) the batch is sharded over.
    scheme: one of `SCHEMES`; None: `choose_scheme` (the least
      communication).

  Returns:
    Params-shaped updates, invariant over `axis_name`.
  """
  if c == 0:
    return mean(updates, axis_name)
  return _order_statistic(updates, c, axis_name, False, scheme)


def trimmed_mean(updates: PyTree, c: int,
                 axis_name: mesh_axes.AxisName,
                 scheme: str = None) -> PyTree:
  """Trimmed mean of the global batch (docs/design/across_devices.md).

  Ties at either or both bounds, infinite bounds and NaN are combined as on
  one device (`order_stats.trimmed_from_middle`).

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    c: values dropped at each end, per coordinate (2c + 1 <= B).
    axis_name: the mesh axis (or axes) the batch is sharded over.
    scheme: one of `SCHEMES`; None: `choose_scheme` (the least
      communication).

  Returns:
    Params-shaped updates, invariant over `axis_name`.
  """
  if c == 0:
    return mean(updates, axis_name)
  return _order_statistic(updates, c, axis_name, True, scheme)


def _chunk_rows(local: int, size: int, num_groups: int) -> int:
  """g = gcd(b, B/k): rows per chunk that never straddles a group boundary."""
  return math.gcd(local, size // num_groups)


def _means_of_chunks(sums: jax.Array, num_groups: int, rows: int,
                     chunk: int) -> jax.Array:
  """[k, ...] group means from the [B/g, ...] chunk sums in global order."""
  sums = sums.reshape((num_groups, rows // chunk) + sums.shape[1:])
  return (sums[:, 0] if rows // chunk == 1 else jnp.sum(sums, axis=1)) / rows


def group_means(updates: PyTree, num_groups: int,
                axis_name: mesh_axes.AxisName) -> PyTree:
  """Means of `num_groups` contiguous groups of the GLOBAL batch: [k, ...].

  Each device sums its rows in chunks of g = gcd(b, m) rows (m = B / k; a
  chunk never straddles a group boundary, wherever the device sits in the
  global order), the chunk sums are gathered in device order (B/g rows) and
  added up per group.

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    num_groups: k, dividing B.
    axis_name: the mesh axis (or axes) the batch is sharded over.

  Returns:
    [k, ...] group means per leaf, invariant over `axis_name`.
  """
  updates = mesh_axes.as_varying(updates, axis_name)
  local = _leading_size(updates)
  size = local * num_devices(axis_name)
  g = _chunk_rows(local, size, num_groups)
  chunks = _gather(_map(lambda x: order_stats.group_sums(x, local // g),
                        updates), axis_name)
  return jax.tree.map(lambda s: _means_of_chunks(
      s, num_groups, size // num_groups, g), chunks)


def median_of_means_scheme(local_size: int, num_groups: int,
                           devices: int) -> str:
  """'all_to_all' or 'gather', whichever receives fewer values per coordinate.

  With g = gcd(b, B/k) rows per chunk: 'gather' receives the B/g chunk sums,
  'all_to_all' the B/g chunk sums of one slice of the coordinates (b/g per
  coordinate) plus the medians of all (1). Ties: 'gather'.

  Example:
    >>> [median_of_means_scheme(1024 // d, 8, d) for d in (1, 2, 256)]
    ['gather', 'all_to_all', 'all_to_all']
    >>> median_of_means_scheme(8, 2, 2)   # one chunk per device: 2P either way
    'gather'
  """
  size = local_size * devices
  chunks = local_size // _chunk_rows(local_size, size, num_groups)
  return 'all_to_all' if chunks + 1 < chunks * devices else 'gather'


def median_scheme(leaf, devices: int) -> str:
  """Coordinate median of one leaf [b, ...]: 'all_to_all' or 'gather'.

  'gather' receives D times the leaf's local storage (LazyRows: their
  factors); 'all_to_all' (b + 1) values per coordinate (rows materialized).
  Ties: 'gather'.

  Example:
    >>> median_scheme(jax.ShapeDtypeStruct((1, 1000), jnp.float32), 8)
    'all_to_all'
  """
  stored = sum(math.prod(a.shape) for a in jax.tree.leaves(leaf))
  coordinates = math.prod(leaf.shape[1:])
  return ('all_to_all' if (leaf.shape[0] + 1) * coordinates < devices * stored
          else 'gather')


def _check_two_schemes(scheme) -> None:
  if scheme not in (None, 'all_to_all', 'gather'):
    raise ValueError(
        f"scheme: got {scheme!r}; pass 'all_to_all', 'gather' or None.")


def gather_rows(updates: PyTree, axis_name: mesh_axes.AxisName) -> PyTree:
  """All devices' rows in global order (LazyRows travel as their factors)."""
  return _gather(mesh_axes.as_varying(updates, axis_name), axis_name)


def _flat_rows(x) -> jax.Array:
  x = order_stats.materialize(x)
  return x.reshape(x.shape[0], -1)


def median(updates: PyTree, axis_name: mesh_axes.AxisName,
           scheme: str = None) -> PyTree:
  """Coordinate-wise median of the global rows (numpy convention).

  Args:
    updates: local rows, leaves [b, ...] (arrays or LazyRows).
    axis_name: the mesh axis (or axes) the rows are sharded over.
    scheme: 'all_to_all' (the rows of one slice of the coordinates to each
      device, `exchange`) or 'gather' (all rows to every device); None:
      `median_scheme` per leaf.

  Returns:
    Params-shaped medians, invariant over `axis_name`.
  """
  _check_two_schemes(scheme)
  updates = mesh_axes.as_varying(updates, axis_name)
  leaves, treedef = jax.tree.flatten(updates, is_leaf=order_stats.is_lazy)
  devices = num_devices(axis_name)
  schemes = [scheme or median_scheme(x, devices) for x in leaves]
  out = [None] * len(leaves)
  gather = [i for i, s in enumerate(schemes) if s == 'gather']
  for i, rows in zip(gather, _gather([leaves[i] for i in gather], axis_name)):
    out[i] = order_stats.median(rows)
  swap = [i for i, s in enumerate(schemes) if s == 'all_to_all']
  medians = exchange(
      [_flat_rows(leaves[i]) for i in swap],
      lambda got: order_stats.median(got.reshape(-1, got.shape[-1]))[None],
      axis_name)
  for i, m in zip(swap, medians):
    out[i] = m[0].reshape(leaves[i].shape[1:])
  return treedef.unflatten(out)


def median_of_means(updates: PyTree, num_groups: int,
                    axis_name: mesh_axes.AxisName,
                    scheme: str = None) -> PyTree:
  """Median of the means of `num_groups` contiguous groups of the global batch.

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    num_groups: k, dividing B.
    axis_name: the mesh axis (or axes) the batch is sharded over.
    scheme: 'all_to_all' (each device's chunk sums of one slice of the
      coordinates to the device owning it, `exchange`) or 'gather' (all chunk
      sums to every device, `group_means`); None: `median_of_means_scheme`.

  Returns:
    Params-shaped updates, invariant over `axis_name`.
  """
  _check_two_schemes(scheme)
  if num_groups == 1:
    return mean(updates, axis_name)
  updates = mesh_axes.as_varying(updates, axis_name)
  local = _leading_size(updates)
  devices = num_devices(axis_name)
  scheme = scheme or median_of_means_scheme(local, num_groups, devices)
  if scheme == 'gather':
    return jax.tree.map(order_stats.median,
                        group_means(updates, num_groups, axis_name))
  size = local * devices
  g = _chunk_rows(local, size, num_groups)
  leaves, treedef = jax.tree.flatten(updates, is_leaf=order_stats.is_lazy)
  sums = [order_stats.group_sums(x, local // g).reshape(local // g, -1)
          for x in leaves]

  def reduce_slice(got):
    means = _means_of_chunks(got.reshape(-1, got.shape[-1]), num_groups,
                             size // num_groups, g)
    return order_stats.median(means)[None]

  medians = exchange(sums, reduce_slice, axis_name)
  return treedef.unflatten([m[0].reshape(x.shape[1:])
                            for m, x in zip(medians, leaves)])
