"""Exact robust aggregation across devices: gather summaries, not examples.

Inside `jax.shard_map` with the batch sharded over a mesh axis (or inside
`jax.pmap`), each of the D devices holds its local per-example updates
[b, ...]. The GLOBAL batch is their concatenation in device order: device d
(`jax.lax.axis_index`, which is also the order of a tiled `all_gather`) holds
rows d*b .. (d+1)*b - 1, B = b * D. Shards have one static size, so B must be
a multiple of D; there is no per-example weight mask (drop padding examples
before sharding). The checks (2c + 1 <= B, k divides B) use the global B.
Every function here returns
exactly what the single-device aggregator returns on the global batch (up to
the order of floating-point additions), the same on every device (invariant
over the axis, so it may leave `jax.shard_map` with `out_specs=P()`).

Communication per step, P = number of params (floats unless noted):
  * winsorized / trimmed mean: each device summarizes its rows by the c+1
    largest and c+1 smallest values per coordinate (`order_stats.extreme_rows`,
    padded with -inf / +inf when b < c+1); one `all_gather` of the summaries
    (2(c+1) * D * P values received per device), a merge to the global bounds
    x_(c+1), x_(B-c), then one `psum` of the locally clipped sums (P values;
    trimmed: the sums strictly inside the bounds plus two int32 tie counts,
    3P). Gathering the per-example updates instead would be B * P.
  * c = 0 (the mean): one psum of P values.
  * median of means (k groups of m = B/k contiguous rows): each device sums
    its rows in chunks of g = gcd(b, m) rows and the chunk sums are gathered
    (B/g * P values: k * P when every device holds whole groups, D * P when
    every group spans whole devices); k = 1 is one psum of P values.
  * coordinate median of the (group) rows: one all_gather of the rows, n * P
    values for n rows in all (use it on few rows, e.g. per-group gradients);
    factored Dense rows (`OuterRows`) travel as their factors.

Mesh-axis types (jax 0.10 `check_vma`): the inputs are cast to vary over
`axis_name` (`mesh_axes.as_varying`), gathers use `to='invarying'`, and sums
leave through `psum`, so every output is invariant over `axis_name`.
"""

import math

import jax
import jax.numpy as jnp

from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree
from coherence_jax.aggregators import order_stats


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


def global_bounds(like: PyTree, extremes: PyTree, c: int,
                  axis_name: mesh_axes.AxisName) -> PyTree:
  """Global clipping bounds from each device's `extreme_rows` summaries.

  Args:
    like: a pytree whose leaves (LazyRows count as leaves) stand for the
      leaves of the summaries (the updates, or the params).
    extremes: `like`'s structure with a (largest, smallest) pair of
      [c+1, ...] arrays per leaf (`order_stats.extreme_rows` of the local
      rows).
    c: values clipped at each end.
    axis_name: the mesh axis (or axes) the rows are sharded over.

  Returns:
    `like`'s structure with (lo, hi) = (x_(c+1), x_(B-c)) of the global
    batch per leaf, invariant over `axis_name`. Communication: one all_gather
    of 2(c+1) * D values per coordinate.
  """
  gathered = _gather(mesh_axes.as_varying(extremes, axis_name), axis_name)
  return _map(lambda _, pair: order_stats.bounds_from_extremes(
      pair[0], pair[1], c), like, gathered)


def mean(updates: PyTree, axis_name: mesh_axes.AxisName) -> PyTree:
  """Mean over the global batch: one psum of the local sums."""
  updates = mesh_axes.as_varying(updates, axis_name)
  size = _leading_size(updates) * num_devices(axis_name)
  sums = jax.lax.psum(_map(order_stats.sum_rows, updates), axis_name)
  return jax.tree.map(lambda s: s / size, sums)


def _zeros_like_rows(x):
  return order_stats.vary_like(jnp.zeros(x.shape[1:], x.dtype), x)


def _global_bounds_of(updates: PyTree, c: int, axis_name):
  """(inputs, unpack, global B, per-input global (x_(c+1), x_(B-c))).

  The inputs are the varying updates' leaves packed into few arrays
  (`order_stats.pack_leaves`: one network per input, not per leaf);
  `unpack` maps per-input results back to the updates' structure.
  """
  updates = mesh_axes.as_varying(updates, axis_name)
  size = _leading_size(updates) * num_devices(axis_name)
  inputs, unpack = order_stats.pack_leaves(updates)
  bounds = global_bounds(
      inputs, [order_stats.extreme_rows(x, c) for x in inputs], c, axis_name)
  return inputs, unpack, size, bounds


def winsorized_mean(updates: PyTree, c: int,
                    axis_name: mesh_axes.AxisName) -> PyTree:
  """Winsorized mean of the global batch (see the module docstring).

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    c: values clipped at each end, per coordinate (2c + 1 <= B).
    axis_name: the mesh axis (or axes) the batch is sharded over.

  Returns:
    Params-shaped updates, invariant over `axis_name`.
  """
  if c == 0:
    return mean(updates, axis_name)
  inputs, unpack, size, bounds = _global_bounds_of(updates, c, axis_name)
  sums = [order_stats.clipped_sum_fold(_zeros_like_rows(x), x, lo, hi)
          for x, (lo, hi) in zip(inputs, bounds)]
  return jax.tree.map(lambda s: s / size,
                      unpack(jax.lax.psum(sums, axis_name)))


def trimmed_mean(updates: PyTree, c: int,
                 axis_name: mesh_axes.AxisName) -> PyTree:
  """Trimmed mean of the global batch (see the module docstring).

  The local sums strictly inside the global bounds and the counts of values
  at or beyond each bound are psum-ed, then combined exactly as the
  single-device path does (`order_stats.trimmed_from_middle`: ties at either
  or both bounds, infinite bounds, NaN).

  Args:
    updates: local per-example updates, leaves [b, ...] (arrays or LazyRows).
    c: values dropped at each end, per coordinate (2c + 1 <= B).
    axis_name: the mesh axis (or axes) the batch is sharded over.

  Returns:
    Params-shaped updates, invariant over `axis_name`.
  """
  if c == 0:
    return mean(updates, axis_name)
  inputs, unpack, size, bounds = _global_bounds_of(updates, c, axis_name)

  def local(x, lo, hi):
    init = order_stats.vary_like(
        order_stats.strict_middle_init(x.shape[1:], x.dtype), x)
    return order_stats.strict_middle_fold(init, x, lo, hi)

  acc = jax.lax.psum([local(x, lo, hi) for x, (lo, hi) in zip(inputs, bounds)],
                     axis_name)
  return unpack([order_stats.trimmed_from_middle(a, lo, hi, size, c)
                 for a, (lo, hi) in zip(acc, bounds)])


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
  m = size // num_groups
  g = math.gcd(local, m)
  chunks = _gather(_map(lambda x: order_stats.group_sums(x, local // g),
                        updates), axis_name)

  def per_group(s):
    s = s.reshape((num_groups, m // g) + s.shape[1:])
    return (s[:, 0] if m // g == 1 else jnp.sum(s, axis=1)) / m
  return jax.tree.map(per_group, chunks)


def gather_rows(updates: PyTree, axis_name: mesh_axes.AxisName) -> PyTree:
  """All devices' rows in global order (LazyRows travel as their factors)."""
  return _gather(mesh_axes.as_varying(updates, axis_name), axis_name)


def median(updates: PyTree, axis_name: mesh_axes.AxisName) -> PyTree:
  """Coordinate-wise median of the global rows (numpy convention)."""
  return _map(order_stats.median, gather_rows(updates, axis_name))


def median_of_means(updates: PyTree, num_groups: int,
                    axis_name: mesh_axes.AxisName) -> PyTree:
  """Median of the means of `num_groups` contiguous groups of the global batch."""
  if num_groups == 1:
    return mean(updates, axis_name)
  return jax.tree.map(order_stats.median,
                      group_means(updates, num_groups, axis_name))
