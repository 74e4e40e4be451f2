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


def next_token_loss(model, batch) -> jax.Array:
  """Next-token cross-entropy of a language model, mean over positions, [B].

  Position t of `batch['tokens'][:, :-1]` predicts token t + 1; each example's
  loss is the mean over its T - 1 predictions. Logits are upcast to float32
  (a bfloat16 model keeps a float32 loss).

  Args:
    model: any callable mapping int tokens [B, T - 1] to logits
      [B, T - 1, vocab] (e.g. `Transformer`, as `from_nnx` passes it).
    batch: {'tokens': int [B, T]}, T >= 2.

  Returns:
    Per-example losses [B] (not averaged over the batch).

  Raises:
    ValueError: tokens are not [B, T] with T >= 2.

  Example:
    >>> uniform = lambda tokens: jnp.zeros(tokens.shape + (7,))
    >>> losses = next_token_loss(uniform, {'tokens': jnp.zeros((2, 4), int)})
    >>> losses.shape, round(float(losses[0]), 4)   # log(7)
    ((2,), 1.9459)
  """
  tokens = batch['tokens']
  if tokens.ndim != 2 or tokens.shape[1] < 2:
    raise ValueError(f"batch['tokens']: got shape {tokens.shape}; pass int "
                     'tokens [batch, length] with length >= 2.')
  logits = model(tokens[:, :-1]).astype(jax.numpy.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           tokens[:, 1:])
  return losses.mean(axis=-1)


def last_token_loss(model, batch) -> jax.Array:
  """Cross-entropy of the last position's logits against `batch['label']`, [B].

  A sequence classifier on a decoder (e.g. grokking's [a, b, '='] -> a + b
  mod p): only the prediction after the whole input is scored. Logits are
  upcast to float32.

  Args:
    model: any callable mapping int tokens [B, T] to logits [B, T, vocab].
    batch: {'tokens': int [B, T], 'label': int [B]} (labels < vocab).

  Returns:
    Per-example losses [B] (not averaged).

  Example:
    >>> onehot = lambda tokens: 9. * jax.nn.one_hot(tokens, 5)  # "copy" model
    >>> batch = {'tokens': jnp.array([[1, 3], [2, 4]]), 'label': jnp.array([3, 0])}
    >>> [round(float(x), 4) for x in last_token_loss(onehot, batch)]
    [0.0005, 9.0005]
  """
  logits = model(batch['tokens'])[:, -1].astype(jax.numpy.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         batch['label'])
