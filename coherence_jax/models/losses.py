"""Per-example losses in the `loss(model, batch) -> [B]` form that `from_nnx` takes."""

import jax
import optax


def cross_entropy_loss(model, batch) -> jax.Array:
  """Softmax cross-entropy of `model(batch['image'])` against `batch['label']`, [B]."""
  logits = model(batch['image'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
