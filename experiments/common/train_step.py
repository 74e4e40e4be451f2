"""The one training step of the experiments: gradients -> optimizer -> params.

With a mesh (`distributed.make_mesh`), the step is data-parallel: the global
batch is split over the 'data' axis, params and optimizer state are
replicated (`jit` on NamedSharding-placed arrays; XLA inserts the
all-reduce), and the aggregator sees the gradients of the GLOBAL batch, so the step equals the
one-device step up to float32 summation order. A batch size that is not a
multiple of the device count is padded: the batch-mean gradient weighs the
padding 0 (the step stays fully sharded); per-example / per-group gradient
functions see exactly the B real examples (the padded batch is sliced inside
the jit; XLA reshards).

Example:
  >>> trainer = make_trainer(mean_grad(loss_fn), optax.sgd(0.1))
  >>> state = trainer.init(params)
  >>> state, finite = trainer.step(state, batch)
  >>> mesh = distributed.make_mesh(-1)             # data-parallel
  >>> trainer = make_trainer(mean_grad(loss_fn), optax.sgd(0.1), mesh)
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.common import distributed

State = Dict[str, Any]  # {'params': ..., 'opt_state': ...}
GradFn = Callable[[Any, Any], Any]


class MeanGrad:
  """`grad_fn(params, batch)`: the gradient of the batch-mean loss.

  `weighted(params, batch, weight)` is the gradient of sum(w·loss) / sum(w)
  (zero-weight padding of a sharded batch).
  """

  def __init__(self, loss_fn):
    self.loss_fn = loss_fn

  def __call__(self, params, batch):
    return jax.grad(lambda p: jnp.mean(self.loss_fn(p, batch)))(params)

  def weighted(self, params, batch, weight):
    return jax.grad(lambda p: jnp.sum(self.loss_fn(p, batch) * weight)
                    / jnp.sum(weight))(params)


def mean_grad(loss_fn) -> GradFn:
  """`grad_fn(params, batch)`: the gradient of the batch-mean loss."""
  return MeanGrad(loss_fn)


def all_finite(tree: Any) -> jax.Array:
  """False if any value of `tree` is NaN or ±inf: isfinite of the total sum.

  A NaN or inf anywhere makes the sum non-finite (inf - inf is NaN); only a
  sum of finite values above ~3e38 would be a false alarm. Cheaper than a
  per-leaf `jnp.all(jnp.isfinite(x))` (docs/design/train_step.md).
  """
  return jnp.isfinite(sum(jnp.sum(x) for x in jax.tree.leaves(tree)))


def make_train_step(grad_fn: GradFn, optimizer: optax.GradientTransformation,
                    mesh: Optional[jax.sharding.Mesh] = None
                    ) -> Callable[[State, Any], Tuple[State, jax.Array]]:
  """A jitted `step(state, batch) -> (state, finite)`.

  Args:
    grad_fn: `grad_fn(params, batch)`, whatever the optimizer's first
      transform takes (batch gradients, per-example or per-group gradients).
    optimizer: the Optax chain, aggregator first.
    mesh: None: the batch and state are used where they are (one device).
      A ('data',) mesh: `batch` is the global batch as host arrays (the same
      on every process), split over 'data'; `state` must be replicated
      (`Trainer.init` does it).

  Returns:
    The step; `finite` is a device bool: are all new params finite? Reading it
    forces a sync, so the loop reads a batch of them at its check points.
    On a mesh, `step(state, batch, process_local=True)` takes this process's
    slice of the global batch instead (streamed data, several processes;
    `distributed.shard_local_batch`).
  """
  def update(state, grads):
    updates, opt_state = optimizer.update(grads, state['opt_state'],
                                          state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'params': params, 'opt_state': opt_state}, all_finite(params)

  if mesh is None:
    return jax.jit(lambda state, batch: update(
        state, grad_fn(state['params'], batch)))

  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, static_argnames='size',
                     out_shardings=(replicated, replicated))
  def sharded(state, batch, weight, size):
    if weight is None:
      grads = grad_fn(state['params'], batch)
    elif isinstance(grad_fn, MeanGrad):
      grads = grad_fn.weighted(state['params'], batch, weight)
    else:  # per-example / per-group: exactly the B real examples
      grads = grad_fn(state['params'],
                      jax.tree.map(lambda x: x[:size], batch))
    return update(state, grads)

  # Several processes on CPU (gloo): steps dispatched ahead of each other
  # were seen to deadlock in the all-reduce (40 queued steps, 2 cores), so
  # each step is finished before the next is dispatched there.
  sync = (jax.process_count() > 1
          and mesh.devices.flat[0].platform == 'cpu')

  def step(state, batch, process_local=False):
    if process_local:  # this process's slice of the global batch
      data = distributed.shard_local_batch(batch, mesh)
      size, weight = np.shape(jax.tree.leaves(data)[0])[0], None
    else:
      size = np.shape(jax.tree.leaves(batch)[0])[0]
      data, weight = distributed.shard_batch(batch, mesh)
    out = sharded(state, data, weight, size)
    return jax.block_until_ready(out) if sync else out
  return step


class Trainer(NamedTuple):
  """An optimizer and its jitted step (`make_train_step`), on a mesh or not."""
  optimizer: optax.GradientTransformation
  step: Callable[[State, Any], Tuple[State, jax.Array]]
  mesh: Optional[jax.sharding.Mesh] = None

  def init(self, params: Any) -> State:
    """The initial state {'params', 'opt_state'} (replicated on the mesh)."""
    state = {'params': params, 'opt_state': self.optimizer.init(params)}
    return state if self.mesh is None else self.place(state)

  def place(self, state: State) -> State:
    """`state` replicated over the mesh (e.g. after a checkpoint restore)."""
    return state if self.mesh is None else distributed.replicate(state,
                                                                 self.mesh)


def make_trainer(grad_fn: GradFn, optimizer: optax.GradientTransformation,
                 mesh: Optional[jax.sharding.Mesh] = None) -> Trainer:
  """Trainer(optimizer, make_train_step(grad_fn, optimizer, mesh), mesh)."""
  return Trainer(optimizer, make_train_step(grad_fn, optimizer, mesh), mesh)
