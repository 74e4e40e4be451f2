"""Coherence over a device mesh: the batch split over devices and processes.

`sharded_coherence_stats` runs `coherence_stats` under `jax.shard_map` with
the batch split over the mesh's batch axes (e.g. ('data',), or ('host',
'data') on a 2-D mesh) and the params replicated; the per-device sums are
psum-ed by XLA collectives, so the result equals the single-device one.

A batch whose size B is not a multiple of the device count is padded with
copies of its first example carrying weight 0: each example's loss is
multiplied by its weight, so a padded example has an exactly zero gradient
and exactly zero norms (ghost or vmap), and the count is the sum of the
weights. Nothing is dropped.

Across processes (`jax.distributed.initialize()`), pass each process's own
slice with `process_local=True`: the global batch is assembled with
`jax.make_array_from_process_local_data`, each process padding its slice to
a multiple of its local devices. Totals equal one process's on the
concatenated slices.
"""

import dataclasses
import functools
import math
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coherence_jax import _checks
from coherence_jax import coherence
from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree
from coherence_jax.per_example import nnx_bridge
from coherence_jax.stats import CoherenceStats


def batch_axes_of(mesh: jax.sharding.Mesh,
                  batch_axes: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """The mesh axes the batch is split over (default: every axis)."""
  axes = tuple(mesh.axis_names) if batch_axes is None else tuple(batch_axes)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if not axes or unknown:
    raise ValueError(
        f'batch_axes: got {batch_axes!r}; pass axes of the mesh '
        f'{tuple(mesh.axis_names)} (default: all of them).')
  return axes


def pad_with_weights(batch: PyTree, multiple: int) -> Tuple[PyTree, np.ndarray]:
  """Pads a host batch to a multiple of `multiple` examples; weights 1 / 0.

  Example:
    >>> padded, weight = pad_with_weights({'x': np.arange(3.)}, 4)
    >>> padded['x'].tolist(), weight.tolist()
    ([0.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0])
  """
  size = _checks.batch_size(batch)
  pad = -size % multiple
  weight = np.concatenate([np.ones((size,), np.float32),
                           np.zeros((pad,), np.float32)])
  if pad:
    batch = jax.tree.map(lambda x: np.concatenate(
        [np.asarray(x), np.repeat(np.asarray(x)[:1], pad, axis=0)]), batch)
  return batch, weight


def weighted_loss(loss_fn: LossFn) -> LossFn:
  """loss_fn of {'examples': batch, 'weight': [B]}: each loss × its weight.

  An `from_nnx` loss stays one (ghost norms still see the model's layers).
  """
  if nnx_bridge.is_nnx_loss(loss_fn):
    inner = loss_fn.loss
    return nnx_bridge.NNXLossFn(
        loss_fn.graphdef, loss_fn.params_template, loss_fn.rest,
        lambda model, data: inner(model, data['examples']) * data['weight'])
  return lambda params, data: loss_fn(params, data['examples']) * data['weight']


@functools.lru_cache(maxsize=64)
def _sharded_program(loss_fn, mesh, axes, microbatch_size, method,
                     ghost_form):
  """One jitted shard_map program per configuration (cached)."""
  weighted = weighted_loss(loss_fn)

  def local(params, data):
    stats = coherence.coherence_stats(
        weighted, params, data, microbatch_size=microbatch_size,
        axis_name=axes, method=method, ghost_form=ghost_form)
    count = jax.lax.psum(jnp.sum(data['weight']), axes)
    return dataclasses.replace(stats, count=count.astype(jnp.int32))

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes)),
                               out_specs=P()))


def sharded_coherence_stats(loss_fn: LossFn, params: PyTree, batch: PyTree,
                            mesh: jax.sharding.Mesh, *,
                            microbatch_size: Optional[int] = None,
                            method: str = 'auto',
                            ghost_form: Optional[str] = None,
                            batch_axes: Optional[Sequence[str]] = None,
                            process_local: bool = False) -> CoherenceStats:
  """Global `CoherenceStats` of a batch split over a mesh's devices.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`, e.g. from `from_nnx`.
    params: pytree of float arrays; replicated over the mesh.
    batch: arrays (numpy, or jax, also already sharded over the mesh's
      Auto or Explicit axes) with a leading example axis: the whole batch,
      or with `process_local=True` this process's slice of it.
    mesh: a `jax.sharding.Mesh`, e.g. `jax.make_mesh((8,), ('data',))`
      (Explicit axes in jax 0.10; Auto axes work the same).
    microbatch_size: examples per device processed at once (memory bound).
    method: 'auto', 'ghost' or 'vmap' (see `coherence_stats`).
    ghost_form: None, 'gram' or 'materialize' (see `coherence_stats`).
    batch_axes: mesh axes the batch is split over; default all of them.
    process_local: `batch` is this process's slice (multi-process runs).

  Returns:
    The statistics of all examples (of all processes), replicated; equal to
    `coherence_stats` on the whole batch on one device up to float32
    summation order. Padding (see the module docstring) is not counted.

  Example:
    >>> mesh = jax.make_mesh((8,), ('data',))
    >>> stats = sharded_coherence_stats(loss_fn, params, batch, mesh)
    >>> int(stats.count)   # 16 examples over 8 devices
    16
    >>> bool(jnp.allclose(stats.m_coherence(),
    ...                   coherence_stats(loss_fn, params, batch).m_coherence(),
    ...                   rtol=1e-5))
    True
  """
  axes = batch_axes_of(mesh, batch_axes)
  _checks.check_per_example_loss(loss_fn, params, _checks.unsharded(batch))
  devices = math.prod(mesh.shape[a] for a in axes)
  data_sharding = NamedSharding(mesh, P(axes))
  if process_local:
    local_devices = devices // jax.process_count()
    padded, weight = pad_with_weights(batch, local_devices)
    data = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(data_sharding, x),
        {'examples': padded, 'weight': weight})
  else:
    padded, weight = pad_with_weights(batch, devices)
    data = jax.device_put({'examples': padded, 'weight': weight},
                          data_sharding)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  program = _sharded_program(loss_fn, mesh, axes, microbatch_size, method,
                             ghost_form)
  return program(params, data)
