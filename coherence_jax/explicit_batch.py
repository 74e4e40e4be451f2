"""A batch sharded over Explicit mesh axes: run the function per device.

`jax.make_mesh` gives Explicit axes in jax 0.10: a batch placed with
`jax.device_put(batch, NamedSharding(mesh, P('data')))` carries its sharding
in its type, and the models' reshapes and gathers would each need an
`out_sharding`. The public functions instead run themselves under
`jax.shard_map` over those axes with `axis_name` set: every device computes
on its own examples and the collectives return the global result (equal to
one device's on the whole batch). Batches on Auto axes, unsharded or
replicated, and calls with an explicit `axis_name` are left as they are.

Example:
  >>> P = jax.sharding.PartitionSpec
  >>> mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
  >>> x = jax.device_put(jnp.arange(4.), jax.NamedSharding(mesh, P('data')))
  >>> batch_axes(x)
  ('data',)
  >>> batch_axes(jnp.arange(4.))
  ()
"""

import functools
from typing import Callable, Tuple

import jax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree

# What a function returns: one value for the whole batch ('global'), or one
# row per example ('per_example', sharded like the batch).
OUTPUTS = ('global', 'per_example')


def _leading_explicit_axes(x) -> Tuple[Tuple[str, ...], object]:
  sharding = getattr(jax.typeof(x), 'sharding', None)
  spec = getattr(sharding, 'spec', None)
  mesh = getattr(sharding, 'mesh', None)
  if not spec or spec[0] is None or mesh is None:
    return (), None
  types = dict(zip(mesh.axis_names, mesh.axis_types))
  axes = mesh_axes.axis_names(spec[0])
  return tuple(a for a in axes if types.get(a) == AxisType.Explicit), mesh


def _axes_and_mesh(batch: PyTree):
  """(Explicit axes of the example axis, their mesh); ((), None) if none."""
  found = {}
  for x in jax.tree.leaves(batch):
    axes, mesh = _leading_explicit_axes(x)
    if axes:
      found.setdefault(axes, mesh)
  if len(found) > 1:
    raise ValueError(
        f'batch: its leaves are sharded over different mesh axes '
        f'{sorted(found)}; place every leaf with the same '
        "NamedSharding(mesh, P('data')).")
  return next(iter(found.items()), ((), None))


def batch_axes(batch: PyTree) -> Tuple[str, ...]:
  """Explicit mesh axes the example axis of `batch` is sharded over.

  Read from the leaves' types (arrays or tracers); () when none is.

  Raises:
    ValueError: leaves sharded over different axes (reshard them alike).
  """
  return _axes_and_mesh(batch)[0]


def per_device(fn: Callable[..., PyTree], output: str) -> Callable[..., PyTree]:
  """`fn(loss_fn, params, batch, *args, axis_name=None, **kw)`, taking Explicit batches.

  When `axis_name` is None and `batch` is sharded over Explicit mesh axes,
  `fn` runs under `jax.shard_map` over them with `axis_name` set to them,
  params replicated; `output` says how the result is put back together.
  Otherwise `fn` is called as it is.
  """
  if output not in OUTPUTS:
    raise ValueError(f'output: got {output!r}; pass one of {OUTPUTS}.')

  @functools.wraps(fn)
  def wrapped(loss_fn, params, batch, *args, axis_name=None, **kwargs):
    axes, mesh = _axes_and_mesh(batch) if axis_name is None else ((), None)
    if not axes:
      return fn(loss_fn, params, batch, *args, axis_name=axis_name, **kwargs)
    spec = P(axes)
    batch = jax.tree.map(lambda x: jax.sharding.reshard(
        x, jax.sharding.NamedSharding(mesh, spec)), batch)

    def local(params, batch):
      return fn(loss_fn, params, batch, *args, axis_name=axes, **kwargs)

    out_spec = P() if output == 'global' else spec
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec),
                         out_specs=out_spec)(params, batch)

  return wrapped
