"""Many leaves as few inputs: one network per packed input, not one per leaf.

Compile time grows with the number of unrolled networks. `pack_leaves`
flattens and concatenates the leaves with at most PACK_MAX_SIZE values per
row, one input per dtype (larger leaves stay inputs of their own, LazyRows
among them lazy); `unpacker` maps one result per input back into the tree,
from shapes and dtypes only, and `packed_shapes` gives the inputs' row shapes
(e.g. for the carries of a scan over blocks of rows). `reduce_leaves` packs,
reduces and unpacks.

PACK_MAX_SIZE is read at call time: set it on this module.

Design notes: docs/design/order_stats.md.
"""

import math
from typing import Any, Callable, List, Tuple

import jax
import jax.numpy as jnp

from coherence_jax.aggregators.order_stats.rows import is_lazy
from coherence_jax.aggregators.order_stats.rows import materialize
from coherence_jax.aggregators.order_stats.rows import replicate_rows

PACK_MAX_SIZE = 1 << 15  # leaves of at most this many values per row share
                         # one network (`pack_leaves`).


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
