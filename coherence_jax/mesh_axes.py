"""Mesh axes inside `jax.shard_map` / `jax.pmap`: checks and casts.

Inside `jax.shard_map`, a value's type carries the mesh axes it varies over
(`varying_axes`): a batch sharded over 'data' varies over {'data'}, replicated
params over none. `jax.grad` with respect to values invariant over an axis
returns gradients already summed over that axis, so per-example (local)
gradients need the params cast to varying first (`as_varying`), and a sharded
batch without `axis_name` is an error (`check_axis_name`), not silently
device-summed gradients. Inside `jax.pmap` nothing is marked varying and
every value is per-device already.

Example (a one-device mesh; any number of devices works the same way):
  >>> P = jax.sharding.PartitionSpec
  >>> mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
  >>> x = jax.device_put(jnp.arange(4.), jax.NamedSharding(mesh, P('data')))
  >>> seen = []
  >>> def local(x, w):
  ...   seen.append((varying_axes(x), varying_axes(w),
  ...                varying_axes(as_varying(w, 'data'))))
  ...   return x
  >>> _ = jax.shard_map(local, mesh=mesh, in_specs=(P('data'), P()),
  ...                   out_specs=P('data'))(x, jnp.ones(3))
  >>> seen
  [(frozenset({'data'}), frozenset(), frozenset({'data'}))]
"""

from typing import FrozenSet, Optional, Tuple, Union

import jax

from coherence_jax._tree import PyTree

AxisName = Optional[Union[str, Tuple[str, ...]]]


def axis_names(axis_name: AxisName) -> Tuple[str, ...]:
  """`axis_name` as a tuple: None -> (), 'data' -> ('data',).

  Args:
    axis_name: None, one mesh axis name, or a tuple / list of them.

  Returns:
    The names as a tuple.

  Example:
    >>> axis_names(None), axis_names('data'), axis_names(('host', 'data'))
    ((), ('data',), ('host', 'data'))
  """
  if axis_name is None:
    return ()
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (
      axis_name,)


def varying_axes(x) -> FrozenSet[str]:
  """Mesh axes `x` varies over inside `jax.shard_map` (empty elsewhere).

  Works on arrays, tracers and `jax.eval_shape` results.

  Args:
    x: an array, tracer or `jax.ShapeDtypeStruct`.

  Returns:
    A frozenset of mesh axis names (see the module docstring for one inside
    `jax.shard_map`).

  Example:
    >>> struct = jax.ShapeDtypeStruct((3,), jnp.float32)
    >>> varying_axes(jnp.ones(3)), varying_axes(struct)
    (frozenset(), frozenset())
  """
  aval = x if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x)
  manual = getattr(aval, 'manual_axis_type', None)
  return frozenset(getattr(manual, 'varying', frozenset()))


def tree_varying_axes(tree: PyTree) -> FrozenSet[str]:
  """Union of `varying_axes` over the leaves of `tree`.

  Args:
    tree: a pytree of arrays, tracers or `jax.ShapeDtypeStruct`s.

  Returns:
    A frozenset of mesh axis names; empty outside `jax.shard_map`.

  Example:
    >>> tree_varying_axes({'image': jnp.ones((2, 3)), 'label': jnp.ones(2)})
    frozenset()
  """
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

  Args:
    axis_name: None, a mesh axis name or a tuple of them.
    batch: the (local) batch, a pytree of arrays or tracers.

  Raises:
    ValueError: a name that is not a str, an axis that is not bound, or a
      batch sharded over axes that `axis_name` omits.

  Example:
    >>> check_axis_name(None, batch)   # outside shard_map: nothing to check
    >>> check_axis_name('data', batch)
    Traceback (most recent call last):
    ValueError: axis_name: 'data' is not an axis ... (bound axes: none). ...
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
  Leaves already varying over an axis are not cast again.

  Args:
    tree: a pytree of arrays or tracers.
    axis_name: None, a mesh axis name or a tuple of them (must be bound
      when not None).

  Returns:
    `tree` with every leaf varying over `axis_name`; `tree` itself when
    `axis_name` is None. See the module docstring for an example inside
    `jax.shard_map`.

  Example:
    >>> w = {'w': jnp.ones(3)}
    >>> as_varying(w, None) is w
    True
  """
  names = axis_names(axis_name)
  if not names:
    return tree

  def cast(x):
    missing = tuple(n for n in names if n not in varying_axes(x))
    return jax.lax.pcast(x, missing, to='varying') if missing else x

  return jax.tree.map(cast, tree)


def like_varying(x: jax.Array, struct) -> jax.Array:
  """`x` cast to vary over the mesh axes of `struct` (eval_shape result).

  Used for the zero initial values of scans whose carry must match the
  varying axes of a body output.

  Args:
    x: an array or tracer.
    struct: a `jax.ShapeDtypeStruct` (or array) whose varying axes to match.

  Returns:
    `x`, cast to also vary over the axes `struct` varies over.

  Example:
    >>> like_varying(jnp.zeros(2), jax.ShapeDtypeStruct((2,), jnp.float32))
    Array([0., 0.], dtype=float32)
  """
  missing = tuple(sorted(varying_axes(struct) - varying_axes(x)))
  return jax.lax.pcast(x, missing, to='varying') if missing else x
