"""Per-example losses in the `loss(model, batch) -> [B]` form that `from_nnx` takes.

Example:
  >>> loss_fn, params = from_nnx(MLP([784, 32, 10], rngs=nnx.Rngs(0)),
  ...                            cross_entropy_loss)
  >>> loss_fn(params, batch).shape
  (16,)
"""

import jax
import optax


def cross_entropy_loss(model, batch) -> jax.Array:
  """Softmax cross-entropy of `model(batch['image'])` against `batch['label']`, [B].

  Args:
    model: any callable mapping images [B, ...] to logits [B, num_classes]
      (an NNX module, as `from_nnx` passes it).
    batch: {'image': [B, ...], 'label': int [B]}.

  Returns:
    Per-example losses [B] (not averaged).

  Example:
    >>> uniform = lambda images: jnp.zeros((images.shape[0], 10))
    >>> losses = cross_entropy_loss(uniform, {'image': jnp.zeros((2, 784)),
    ...                                       'label': jnp.array([3, 7])})
    >>> losses.shape, round(float(losses[0]), 4)   # log(10)
    ((2,), 2.3026)
  """
  logits = model(batch['image'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
