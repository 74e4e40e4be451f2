"""The inputs of the order-statistics kernels: arrays or `LazyRows` [n, ...].

Every kernel of `order_stats` reduces the leading (row) axis of one input: a
plain array, or a `LazyRows` whose rows are computed on demand (e.g. Dense
per-example gradients kept as outer-product factors,
`per_example.factored_dense`), formed inside the kernel and never
materialized. Here: reading one row (`_row`), expanding a lazy input
(`materialize`), replicating rows sharded over an Explicit mesh axis
(`replicate_rows`), an optimization barrier against recomputing an input's
producer (`materialized_inputs`), and sums over the rows (`sum_rows`, `mean`).

Design notes (lazy rows, sharded rows): docs/design/order_stats.md.
"""

from typing import Any, Tuple

import jax

from coherence_jax import reductions


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


def sum_rows(x) -> jax.Array:
  """Sum over the leading axis as a ones-vector matmul (faster on XLA:CPU)."""
  if isinstance(x, LazyRows):
    return x.sum_rows()
  return reductions.sum_over_examples(x)


def mean(x: jax.Array) -> jax.Array:
  """Mean over the leading axis."""
  return sum_rows(x) / x.shape[0]
