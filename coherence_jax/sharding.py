"""Mesh axes inside `jax.shard_map` / `jax.pmap`: checks and casts.

Inside `jax.shard_map`, a value's type carries the mesh axes it varies over
(`varying_axes`): a batch sharded over 'data' varies over {'data'}, replicated
params over none. `jax.grad` with respect to values invariant over an axis
returns gradients already summed over that axis, so per-example (local)
gradients need the params cast to varying first (`as_varying`), and a sharded
batch without `axis_name` is an error (`check_axis_name`), not a silent
α of device-summed gradients. Inside `jax.pmap` nothing is marked varying and
every value is per-device already.
"""

from typing import FrozenSet, Optional, Tuple, Union

import jax

from coherence_jax._tree import PyTree

AxisName = Optional[Union[str, Tuple[str, ...]]]


def axis_names(axis_name: AxisName) -> Tuple[str, ...]:
  """`axis_name` as a tuple: None -> (), 'data' -> ('data',)."""
  if axis_name is None:
    return ()
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (
      axis_name,)


def varying_axes(x) -> FrozenSet[str]:
  """Mesh axes `x` varies over inside `jax.shard_map` (empty elsewhere).

  Works on arrays, tracers and `jax.eval_shape` results.
  """
  aval = x if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x)
  manual = getattr(aval, 'manual_axis_type', None)
  return frozenset(getattr(manual, 'varying', frozenset()))


def tree_varying_axes(tree: PyTree) -> FrozenSet[str]:
  """Union of `varying_axes` over the leaves of `tree`."""
  out = frozenset()
  for leaf in jax.tree.leaves(tree):
    out |= varying_axes(leaf)
  return out


def check_axis_name(axis_name: AxisName, batch: PyTree) -> None:
  """Raises a ValueError when `axis_name` and the batch's sharding disagree.

  * `axis_name` names an axis that is not bound (not inside a shard_map/pmap
    over it): the error lists the bound mesh axes.
  * Inside `jax.shard_map` the batch varies over mesh axes that `axis_name`
    does not name: per-example gradients with respect to the replicated params
    would come back summed over devices. The error names `axis_name`.
  """
  names = axis_names(axis_name)
  for name in names:
    if not isinstance(name, str):
      raise ValueError(f'axis_name: got {axis_name!r}; pass a mesh axis name '
                       '(str) or a tuple of them.')
    try:
      jax.lax.axis_size(name)
    except NameError:
      bound = _bound_axes()
      raise ValueError(
          f'axis_name: {name!r} is not an axis of the enclosing jax.shard_map '
          f'or jax.pmap (bound axes: {bound or "none"}). Pass one of them, or '
          'axis_name=None outside shard_map/pmap.') from None
  missing = sorted(tree_varying_axes(batch) - set(names))
  if missing:
    hint = missing[0] if len(missing) == 1 and not names else tuple(
        list(names) + missing)
    raise ValueError(
        f'axis_name: the batch is sharded over mesh axes {missing} inside '
        f'jax.shard_map but axis_name={axis_name!r}; per-example gradients '
        'with respect to replicated params would come back summed over '
        f'devices. Pass axis_name={hint!r}.')


def _bound_axes() -> Tuple[str, ...]:
  mesh = jax.sharding.get_abstract_mesh()
  return tuple(getattr(mesh, 'axis_names', ()) or ())


def as_varying(tree: PyTree, axis_name: AxisName) -> PyTree:
  """Casts the leaves of `tree` to vary over `axis_name` (no-op outside it).

  Params closed over inside `jax.shard_map` are invariant; their gradient
  would come back summed over devices. Cast them first for local gradients.
  """
  names = axis_names(axis_name)
  if not names:
    return tree

  def cast(x):
    missing = tuple(n for n in names if n not in varying_axes(x))
    return jax.lax.pcast(x, missing, to='varying') if missing else x

  return jax.tree.map(cast, tree)


def like_varying(x: jax.Array, struct) -> jax.Array:
  """`x` cast to vary over the same mesh axes as `struct` (eval_shape result)."""
  missing = tuple(sorted(varying_axes(struct) - varying_axes(x)))
  return jax.lax.pcast(x, missing, to='varying') if missing else x
