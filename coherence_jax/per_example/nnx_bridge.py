"""Adapts a Flax NNX model to the core's pure `loss_fn(params, batch)` form."""

from typing import Callable, Tuple

import jax
from flax import nnx

from coherence_jax._tree import PyTree


class NNXLossFn:
  """`loss_fn(params, batch) -> [B]` for an NNX model in inference mode.

  Holds the model's graph definition and its non-parameter state (batch
  statistics, RNG), fixed; `params` is a nested dict of the `nnx.Param` arrays.
  Hashable by identity, so it can be a static argument of `jax.jit`.
  """

  def __init__(self, graphdef, params_template: nnx.State, rest: nnx.State,
               loss: Callable[[nnx.Module, PyTree], jax.Array]):
    self.graphdef = graphdef
    self.params_template = params_template
    self.rest = rest
    self.loss = loss

  def model(self, params: PyTree) -> nnx.Module:
    """The model rebuilt with `params` (a nested dict like `from_nnx` returns)."""
    state = nnx.State(params)
    return nnx.merge(self.graphdef, state, self.rest)

  def __call__(self, params: PyTree, batch: PyTree) -> jax.Array:
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

  Example:
    >>> model = MLP([784, 32, 10], rngs=nnx.Rngs(0))
    >>> loss_fn, params = from_nnx(model, cross_entropy_loss)
    >>> stats = coherence_stats(loss_fn, params, batch)
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
  """Whether `loss_fn` came from `from_nnx` (its layers are visible)."""
  return isinstance(loss_fn, NNXLossFn)
