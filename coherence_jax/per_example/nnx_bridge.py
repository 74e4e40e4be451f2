"""Adapts a Flax NNX model to the core's pure `loss_fn(params, batch)` form.

Example:
  >>> loss_fn, params = from_nnx(MLP([784, 32, 10], rngs=nnx.Rngs(0)),
  ...                            cross_entropy_loss)
  >>> loss_fn(params, batch).shape
  (16,)
"""

from typing import Callable, Tuple

import jax
from flax import nnx

from coherence_jax._tree import PyTree


class NNXLossFn:
  """`loss_fn(params, batch) -> [B]` for an NNX model in inference mode.

  Holds the model's graph definition and its non-parameter state (batch
  statistics, RNG), fixed; `params` is a nested dict of the `nnx.Param` arrays.
  Hashable by identity, so it can be a static argument of `jax.jit`. Made by
  `from_nnx`; ghost norms read the model's layers through `model`.

  Example:
    >>> loss_fn
    NNXLossFn(loss='cross_entropy_loss')
  """

  def __init__(self, graphdef, params_template: nnx.State, rest: nnx.State,
               loss: Callable[[nnx.Module, PyTree], jax.Array]):
    self.graphdef = graphdef
    self.params_template = params_template
    self.rest = rest
    self.loss = loss

  def model(self, params: PyTree) -> nnx.Module:
    """The model rebuilt with `params` (a nested dict like `from_nnx` returns).

    Args:
      params: a nested dict of arrays with the structure `from_nnx` returned.

    Returns:
      A new NNX module (inference mode) holding `params`.

    Example:
      >>> loss_fn.model(params)(batch['image']).shape
      (16, 10)
    """
    state = nnx.State(params)
    # Fresh Variables for the fixed state too, made in the current trace: a
    # module that counts its RNG calls (nnx.bridge.ToNNX) mutates them, and
    # a mutation of a Variable made outside a jit trace is an error there.
    rest = jax.tree.map(lambda v: v, self.rest)
    return nnx.merge(self.graphdef, state, rest)

  def __call__(self, params: PyTree, batch: PyTree) -> jax.Array:
    """`loss(model rebuilt with params, batch)`: per-example losses [B].

    Args:
      params: a nested dict of arrays with the structure `from_nnx` returned.
      batch: the batch `loss` takes, leading example axis B.

    Returns:
      Per-example losses [B].

    Example:
      >>> loss_fn(params, batch).shape
      (16,)
    """
    return self.loss(self.model(params), batch)

  def __repr__(self):
    return f'NNXLossFn(loss={getattr(self.loss, "__name__", self.loss)!r})'


def from_nnx(model: nnx.Module,
             loss: Callable[[nnx.Module, PyTree], jax.Array]
             ) -> Tuple[NNXLossFn, PyTree]:
  """Returns `(loss_fn, params)` for the core API from an NNX model.

  `loss(model, batch)` must return per-example losses [B]. `params` is a nested
  dict of the model's `nnx.Param` arrays; every other state is held fixed and
  the model runs in inference mode (no dropout, BatchNorm running statistics),
  as per-example gradients require. The caller's model is not modified.

  Args:
    model: a `flax.nnx.Module`.
    loss: `loss(model, batch) -> [B]` per-example losses, e.g.
      `coherence_jax.models.cross_entropy_loss`.

  Returns:
    `(loss_fn, params)`: an `NNXLossFn` (hashable, static under `jax.jit`)
    and a nested dict of the model's param arrays.

  Raises:
    ValueError: `model` is not an NNX module, or `loss` is not callable.

  Example:
    >>> model = MLP([784, 32, 10], rngs=nnx.Rngs(0))
    >>> loss_fn, params = from_nnx(model, cross_entropy_loss)
    >>> jax.tree.map(jnp.shape, params['layers'][1])
    {'bias': (10,), 'kernel': (32, 10)}
    >>> loss_fn(params, batch).shape
    (16,)
    >>> from_nnx(lambda x: x, cross_entropy_loss)
    Traceback (most recent call last):
    ValueError: model: expected a flax.nnx.Module, got function; ...
  """
  if not isinstance(model, nnx.Module):
    raise ValueError(
        f'model: expected a flax.nnx.Module, got {type(model).__name__}; for '
        'other libraries pass loss_fn(params, batch) to the core directly.')
  if not callable(loss):
    raise ValueError('loss: pass a callable loss(model, batch) -> [B] losses.')
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, state)  # never mutate the caller's model
  copy.eval()
  graphdef, params, rest = nnx.split(copy, nnx.Param, ...)
  return NNXLossFn(graphdef, params, rest, loss), nnx.to_pure_dict(params)


def is_nnx_loss(loss_fn) -> bool:
  """Whether `loss_fn` came from `from_nnx` (its layers are visible).

  Args:
    loss_fn: any loss.

  Returns:
    True for an `NNXLossFn`.

  Example:
    >>> is_nnx_loss(loss_fn), is_nnx_loss(lambda p, b: b)
    (True, False)
  """
  return isinstance(loss_fn, NNXLossFn)
