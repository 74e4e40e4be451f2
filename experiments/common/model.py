"""The experiments' model: an MLP as (loss_fn, params) plus a jitted accuracy.

Example:
  >>> model = make_mlp((784, 2048, 10), seed=0)
  >>> model.accuracy(model.params, images, labels)   # a device scalar
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj


class Model(NamedTuple):
  loss_fn: Callable[[Any, Any], jax.Array]   # (params, batch) -> [B] losses
  params: Any
  accuracy: Callable[[Any, jax.Array, jax.Array], jax.Array]


def _correct(model: nnx.Module, batch) -> jax.Array:
  return (jnp.argmax(model(batch['image']), -1) == batch['label']).astype(
      jnp.float32)


def make_mlp(widths: Sequence[int], seed: int) -> Model:
  """A ReLU MLP with cross-entropy loss, initialized from `seed`.

  Args:
    widths: input, hidden..., output sizes, e.g. (784, 2048, 10).
    seed: the initialization seed.

  Returns:
    Model(loss_fn, params, accuracy(params, images, labels) -> fraction).
  """
  module = cj.models.MLP(list(widths), rngs=nnx.Rngs(seed))
  loss_fn, params = cj.from_nnx(module, cj.models.cross_entropy_loss)
  correct_fn, _ = cj.from_nnx(module, _correct)

  @jax.jit
  def accuracy(params, images, labels):
    return jnp.mean(correct_fn(params, {'image': images, 'label': labels}))

  return Model(loss_fn, params, accuracy)
