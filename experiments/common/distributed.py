"""Processes and the device mesh of an experiment: one code path, 1 to N devices.

Every experiment trains data-parallel on a 1-D mesh with one axis, 'data':
the batch is split over it, params and optimizer state are replicated, and
XLA inserts the all-reduce (`jit` on arrays placed with NamedSharding; the
mesh axis is of type Auto, so the shardings propagate through any code). `config.mesh.data`
chooses the devices: -1 = every device (of every process), n = the first n
(one process only), 1 = one device (the single-device program).

Processes: `--coordinator_address --num_processes --process_id` join
`jax.distributed.initialize(...)`; `--distributed=auto` calls it with no
arguments (Cloud TPU VMs, SLURM: the environment provides the rest). Every
process draws the same batch indices: with an in-memory dataset each builds
the global batch from its own copy (`shard_batch`); with a streamed one each
reads only its slice (`shard_local_batch`). Only process 0 writes files
(`is_writer`), the metrics are identical on every process.

Example:
  >>> mesh = make_mesh(-1)                     # every device, axis 'data'
  >>> data, weight = shard_batch(batch, mesh)  # zero-weight padding to n | B
  >>> state = replicate(state, mesh)
"""

import math
from typing import Any, Optional, Tuple

from absl import flags
import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'
DISTRIBUTED_MODES = ('off', 'auto')


def define_flags() -> None:
  """The process flags of every experiment's main.py (absl)."""
  flags.DEFINE_enum(
      'distributed', 'off', DISTRIBUTED_MODES,
      "'auto': jax.distributed.initialize() with no arguments (Cloud TPU "
      "VM, SLURM); 'off': one process unless --coordinator_address is given.")
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, e.g. 127.0.0.1:1234.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes.')
  flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')


def initialize_from_flags() -> None:
  """Joins jax.distributed as the flags of `define_flags` say (or not)."""
  f = flags.FLAGS
  initialize(f.distributed, f.coordinator_address, f.num_processes,
             f.process_id)


def initialize(mode: str = 'off', coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """`jax.distributed.initialize` for explicit flags or `mode='auto'`.

  Must run before any JAX computation. ValueError names a missing flag.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f'--distributed: got {mode!r}; pass one of '
                     f'{DISTRIBUTED_MODES}.')
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
          '--coordinator_address, --num_processes and --process_id: got '
          f'{explicit}; pass all three (or none, with --distributed=auto).')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id: got {process_id}; pass 0..'
                       f'{num_processes - 1}.')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
  elif mode == 'auto':
    jax.distributed.initialize()


def is_writer() -> bool:
  """Does this process write files (reports, plots, metrics)? Process 0."""
  return jax.process_index() == 0


def make_mesh(data: int = -1) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh of `data` devices (-1: all devices of all processes).

  Args:
    data: config.mesh.data; n > 0 takes the first n devices (one process
      only: with several processes the mesh must hold every device).

  Returns:
    The mesh.
  """
  total = jax.device_count()
  if data == -1:
    data = total
  if not isinstance(data, int) or not 1 <= data <= total:
    raise ValueError(f'config.mesh.data: got {data!r}; pass -1 (every '
                     f'device) or 1..{total}.')
  if jax.process_count() > 1 and data != total:
    raise ValueError(f'config.mesh.data: got {data} with '
                     f'{jax.process_count()} processes; pass -1 (all {total} '
                     'devices) so every process takes part.')
  # Auto axes: jit propagates the input shardings (GSPMD) through any code.
  # (Explicit axes put shardings in the types; the library's factored
  # per-example gradients then fail in vmap: 'Mapped away dimension ...
  # should be sharded the same'.)
  return jax.make_mesh((data,), (AXIS,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:data])


def mesh_size(mesh: jax.sharding.Mesh) -> int:
  return math.prod(mesh.shape.values())


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value that every process holds in full."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Every leaf replicated over the mesh (params, optimizer state).

  Leaves must be host values or fully replicated / fully addressable arrays
  that are equal on every process (e.g. initialized from the same seed).
  """
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_batch(batch: Any, mesh: jax.sharding.Mesh
                ) -> Tuple[Any, Optional[jax.Array]]:
  """The global batch split over 'data': (arrays, weight or None).

  B not a multiple of the mesh size is padded with copies of the first
  example; `weight` is then 1 for the B real examples and 0 for the padding
  (None when nothing was padded).

  Args:
    batch: host arrays with a leading example axis, the same on every process.
    mesh: from `make_mesh`.
  """
  leaves = jax.tree.leaves(batch)
  size = np.shape(leaves[0])[0]
  pad = -size % mesh_size(mesh)
  sharding = NamedSharding(mesh, P(AXIS))
  weight = None
  if pad:
    batch = jax.tree.map(lambda x: np.concatenate(
        [np.asarray(x), np.repeat(np.asarray(x)[:1], pad, axis=0)]), batch)
    weight = _put(np.concatenate([np.ones(size, np.float32),
                                  np.zeros(pad, np.float32)]), sharding)
  return jax.tree.map(lambda x: _put(x, sharding), batch), weight


def shard_local_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """The global batch from this process's slice of it (streamed data).

  Each process passes its contiguous slice (`order.process_slice`), the
  same size on every process and a multiple of its devices on the mesh.

  Raises:
    ValueError: a slice that does not split evenly over the local devices.
  """
  sharding = NamedSharding(mesh, P(AXIS))
  local = np.shape(jax.tree.leaves(batch)[0])[0]
  devices = mesh_size(mesh) // jax.process_count()
  if local % devices:
    raise ValueError(
        f'config.train.batch_size: this process reads {local} examples of '
        f'each batch for its {devices} devices; pass a batch size that is a '
        f'multiple of {devices * jax.process_count()} (every device of the '
        'mesh) when several processes stream the data.')
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(x)), batch)


def local_copy(tree: Any) -> Any:
  """A replicated tree's values on this process's first local device."""
  device = jax.local_devices()[0]
  return jax.tree.map(
      lambda x: jax.device_put(x.addressable_data(0), device), tree)

