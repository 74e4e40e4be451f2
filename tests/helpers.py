"""Small shared fixtures for the tests: tiny models and batches."""

import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj


def tiny_mlp(widths=(12, 8, 3), seed=0):
  """(loss_fn, params) of a small MLP with cross-entropy."""
  model = cj.models.MLP(list(widths), rngs=nnx.Rngs(seed))
  return cj.from_nnx(model, cj.models.cross_entropy_loss)


def tiny_batch(size, dim=12, classes=3, seed=1):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'image': jax.random.normal(k1, (size, dim)),
          'label': jax.random.randint(k2, (size,), 0, classes)}


def loop_grads(loss_fn, params, batch):
  """Reference: a Python loop of jax.grad over single examples, stacked."""
  size = jax.tree.leaves(batch)[0].shape[0]
  grads = []
  for i in range(size):
    example = jax.tree.map(lambda x: x[i:i + 1], batch)
    grads.append(jax.grad(lambda p: loss_fn(p, example)[0])(params))
  return jax.tree.map(lambda *g: jnp.stack(g), *grads)
