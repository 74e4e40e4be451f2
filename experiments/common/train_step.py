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
  >>> state, finite, (loss, stats) = trainer.measured_step(state, batch)

A batch-mean trainer's `measured_step` makes the same update and returns the
training batch's `CoherenceStats` from the same backward pass
(`coherence_jax.value_and_grad`): a measurement on the training batch costs
one backward pass, not two.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coherence_jax import own_loop
from coherence_jax import sharding as cj_sharding
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


def _apply_update(optimizer, state, grads):
  """One optimizer step on `state`; also whether the new params are finite."""
  updates, opt_state = optimizer.update(grads, state['opt_state'],
                                        state['params'])
  params = optax.apply_updates(state['params'], updates)
  return {'params': params, 'opt_state': opt_state}, all_finite(params)


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
  update = functools.partial(_apply_update, optimizer)

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


def make_measured_step(loss_fn, optimizer: optax.GradientTransformation,
                       mesh: Optional[jax.sharding.Mesh] = None, *,
                       method: str = 'auto',
                       microbatch_size: Optional[int] = None):
  """A jitted `step(state, batch) -> (state, finite, (mean_loss, stats))`.

  The batch-mean step of `make_train_step(mean_grad(loss_fn), ...)` that
  also returns the `CoherenceStats` of its training batch, both from ONE
  backward pass (`coherence_jax.value_and_grad`: the ghost pass's
  S = Σ g_i is the gradient). On a mesh the batch is split over 'data'
  inside `jax.shard_map` (axis_name 'data'); zero-weight padding is counted
  neither in the gradient's mean nor in the stats.
  """
  update = functools.partial(_apply_update, optimizer)

  if mesh is None:
    @jax.jit
    def plain(state, batch):
      (loss, stats), grads = own_loop.value_and_grad_stats(
          loss_fn, state['params'], batch, method=method,
          microbatch_size=microbatch_size)
      new_state, finite = update(state, grads)
      return new_state, finite, (loss, stats)
    return lambda state, batch, process_local=False: plain(state, batch)

  replicated = NamedSharding(mesh, P())
  weighted = cj_sharding.weighted_loss(loss_fn)

  def local(params, data):
    (loss, stats), grads = own_loop.value_and_grad_stats(
        weighted, params, data, method=method,
        microbatch_size=microbatch_size, axis_name=distributed.AXIS)
    # value_and_grad divides by every example, padding included.
    padded = stats.count.astype(jnp.float32)
    real = jax.lax.psum(jnp.sum(data['weight']), distributed.AXIS)
    grads = jax.tree.map(lambda g: (g * (padded / real)).astype(g.dtype),
                         grads)
    stats = dataclasses.replace(stats, count=real.astype(jnp.int32))
    return (loss * padded / real, stats), grads

  @functools.partial(jax.jit, out_shardings=replicated)
  def sharded(state, data):
    (loss, stats), grads = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(distributed.AXIS)),
        out_specs=P())(state['params'], data)
    new_state, finite = update(state, grads)
    return new_state, finite, (loss, stats)

  sync = (jax.process_count() > 1
          and mesh.devices.flat[0].platform == 'cpu')

  def step(state, batch, process_local=False):
    if process_local:
      data = distributed.shard_local_batch(batch, mesh)
      weight = jax.make_array_from_process_local_data(
          NamedSharding(mesh, P(distributed.AXIS)),
          np.ones((np.shape(jax.tree.leaves(batch)[0])[0],), np.float32))
    else:
      data, weight = distributed.shard_batch(batch, mesh)
      if weight is None:
        weight = distributed._put(  # pylint: disable=protected-access
            np.ones((np.shape(jax.tree.leaves(data)[0])[0],), np.float32),
            NamedSharding(mesh, P(distributed.AXIS)))
    out = sharded(state, {'examples': data, 'weight': weight})
    return jax.block_until_ready(out) if sync else out
  return step


def batch_row(loss: jax.Array, stats: Any, prefix: str = 'batch_'
              ) -> Dict[str, Any]:
  """The metric row of a training batch's (mean loss, CoherenceStats).

  Keys (with `prefix`): loss, m_coherence, alpha_unbiased, noise_scale
  (B_simple; inf / nan where undefined, see `CoherenceStats.noise_scale`),
  gradient_diversity, and modules {name: {m_coherence, noise_scale}}.
  """
  numbers = stats.report()
  row = {f'{prefix}loss': float(loss)}
  for key in ('m_coherence', 'alpha_unbiased', 'noise_scale',
              'gradient_diversity'):
    row[f'{prefix}{key}'] = numbers[key]
  row[f'{prefix}modules'] = {
      name: {'m_coherence': e['m_coherence'], 'noise_scale': e['noise_scale']}
      for name, e in numbers['modules'].items()}
  return row


def loop_measured_step(trainer: 'Trainer',
                       read: Callable[[int], Tuple[Any, bool]]
                       ) -> Optional[Callable[[State, int], Any]]:
  """`loop.run`'s measured_train_step for `trainer` (None if it has none).

  Args:
    trainer: a `Trainer` (its `measured_step`).
    read: `read(step) -> (batch, process_local)`, the step's training batch.

  Returns:
    `measured(state, step) -> (state, finite, batch_row(...))`, or None for
    trainers without a measured step (per-example aggregators).
  """
  if trainer.measured_step is None:
    return None

  def measured(state, step):
    batch, process_local = read(step)
    new_state, finite, (loss, stats) = trainer.measured_step(
        state, batch, process_local=process_local)
    return new_state, finite, batch_row(loss, stats)

  return measured


class Trainer(NamedTuple):
  """An optimizer and its jitted step (`make_train_step`), on a mesh or not.

  `measured_step(state, batch, process_local=False) -> (state, finite,
  (mean_loss, stats))` (batch-mean trainers only, else None): the same
  update, with the training batch's coherence from the same backward pass.
  """
  optimizer: optax.GradientTransformation
  step: Callable[[State, Any], Tuple[State, jax.Array]]
  mesh: Optional[jax.sharding.Mesh] = None
  measured_step: Optional[Callable[..., Any]] = None

  def init(self, params: Any) -> State:
    """The initial state {'params', 'opt_state'} (replicated on the mesh)."""
    state = {'params': params, 'opt_state': self.optimizer.init(params)}
    return state if self.mesh is None else self.place(state)

  def place(self, state: State) -> State:
    """`state` replicated over the mesh (e.g. after a checkpoint restore)."""
    return state if self.mesh is None else distributed.replicate(state,
                                                                 self.mesh)


def make_trainer(grad_fn: GradFn, optimizer: optax.GradientTransformation,
                 mesh: Optional[jax.sharding.Mesh] = None, *,
                 method: str = 'auto',
                 microbatch_size: Optional[int] = None) -> Trainer:
  """Trainer(optimizer, make_train_step(grad_fn, optimizer, mesh), mesh, ...).

  For a batch-mean `grad_fn` (`mean_grad`), also the `measured_step`
  (`make_measured_step` with `method` and `microbatch_size`).
  """
  measured = (make_measured_step(grad_fn.loss_fn, optimizer, mesh,
                                 method=method,
                                 microbatch_size=microbatch_size)
              if isinstance(grad_fn, MeanGrad) else None)
  return Trainer(optimizer, make_train_step(grad_fn, optimizer, mesh), mesh,
                 measured)
