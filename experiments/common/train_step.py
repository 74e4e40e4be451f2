"""The one training step of the experiments: gradients -> optimizer -> params.

Example:
  >>> trainer = make_trainer(mean_grad(loss_fn), optax.sgd(0.1))
  >>> state = trainer.init(params)
  >>> state, finite = trainer.step(state, batch)
"""

from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

State = Dict[str, Any]  # {'params': ..., 'opt_state': ...}
GradFn = Callable[[Any, Any], Any]


def mean_grad(loss_fn) -> GradFn:
  """`grad_fn(params, batch)`: the gradient of the batch-mean loss."""
  return lambda params, batch: jax.grad(
      lambda p: jnp.mean(loss_fn(p, batch)))(params)


def all_finite(tree: Any) -> jax.Array:
  """False if any value of `tree` is NaN or ±inf: isfinite of the total sum.

  A NaN or inf anywhere makes the sum non-finite (inf - inf is NaN); only a
  sum of finite values above ~3e38 would be a false alarm. On the demo's
  784-2048-10 step (B=100, XLA:CPU) it cost ~0-4 % of the step's CPU time,
  against ~5 % for jnp.all(jnp.isfinite(x)) per leaf.
  """
  return jnp.isfinite(sum(jnp.sum(x) for x in jax.tree.leaves(tree)))


def make_train_step(grad_fn: GradFn, optimizer: optax.GradientTransformation
                    ) -> Callable[[State, Any], Tuple[State, jax.Array]]:
  """A jitted `step(state, batch) -> (state, finite)`.

  Args:
    grad_fn: `grad_fn(params, batch)`, whatever the optimizer's first
      transform takes (batch gradients, per-example or per-group gradients).
    optimizer: the Optax chain, aggregator first.

  Returns:
    The step; `finite` is a device bool: are all new params finite? Reading it
    forces a sync, so the loop reads a batch of them at its check points.
  """
  @jax.jit
  def step(state, batch):
    grads = grad_fn(state['params'], batch)
    updates, opt_state = optimizer.update(grads, state['opt_state'],
                                          state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'params': params, 'opt_state': opt_state}, all_finite(params)
  return step


class Trainer(NamedTuple):
  """An optimizer and its jitted step (`make_train_step`)."""
  optimizer: optax.GradientTransformation
  step: Callable[[State, Any], Tuple[State, jax.Array]]

  def init(self, params: Any) -> State:
    """The initial state {'params', 'opt_state'}."""
    return {'params': params, 'opt_state': self.optimizer.init(params)}


def make_trainer(grad_fn: GradFn,
                 optimizer: optax.GradientTransformation) -> Trainer:
  """Trainer(optimizer, make_train_step(grad_fn, optimizer))."""
  return Trainer(optimizer, make_train_step(grad_fn, optimizer))
