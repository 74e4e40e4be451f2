"""Per-example and per-group gradients, jit-compiled and micro-batched.

`loss_fn(params, batch)` returns per-example losses of shape [B]; `batch` is a
pytree of arrays with a leading example axis B.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from coherence_jax import batching

PyTree = batching.PyTree

# per_group_grads unrolls up to this many groups and vmaps over more.
MAX_UNROLLED_GROUPS = 16


def example_grads_unjitted(loss_fn, params, batch,
                           microbatch_size: Optional[int] = None):
  """Traceable body of `per_example_grads`, for use inside other transforms."""
  size = batching.check_per_example_loss(loss_fn, params, batch)
  batching.check_microbatch_size(microbatch_size)
  grad_one = jax.vmap(jax.grad(batching.single_example_loss(loss_fn)),
                      in_axes=(None, 0))
  if microbatch_size is None or microbatch_size >= size:
    return grad_one(params, batch)
  chunks, tail = batching.split_microbatches(batch, microbatch_size, size)
  parts = []
  if chunks is not None:
    stacked = jax.lax.map(lambda chunk: grad_one(params, chunk), chunks)
    parts.append(jax.tree.map(
        lambda g: g.reshape((-1,) + g.shape[2:]), stacked))
  if tail is not None:
    parts.append(grad_one(params, tail))
  if len(parts) == 1:
    return parts[0]
  return jax.tree.map(lambda *gs: jnp.concatenate(gs, axis=0), *parts)


@functools.partial(jax.jit, static_argnames=('loss_fn', 'microbatch_size'))
def per_example_grads(loss_fn, params, batch, *,
                      microbatch_size: Optional[int] = None):
  """Gradient of each example's loss: a params-shaped pytree with leading axis B.

  With `microbatch_size`, examples are processed `microbatch_size` at a time
  (`lax.map` over chunks, then the remainder), so activation memory is bounded by
  the chunk; every example is counted once even if the chunk does not divide B.

  Example:
    >>> loss_fn = lambda w, b: (b['x'] @ w - b['y']) ** 2
    >>> g = per_example_grads(loss_fn, jnp.ones(3),
    ...                       {'x': jnp.ones((5, 3)), 'y': jnp.zeros(5)},
    ...                       microbatch_size=2)
    >>> g.shape
    (5, 3)
  """
  return example_grads_unjitted(loss_fn, params, batch, microbatch_size)


def group_grads_unjitted(loss_fn, params, batch, num_groups: int):
  """Traceable body of `per_group_grads`."""
  size = batching.check_per_example_loss(loss_fn, params, batch)
  if not isinstance(num_groups, int) or num_groups <= 0 or size % num_groups:
    raise ValueError(
        f'num_groups: got {num_groups!r} for a batch of {size} examples; pass a '
        'positive int that divides the batch size into equal groups.')
  # One ordinary gradient per contiguous slice, Python-unrolled, then stacked.
  # vmap over groups made XLA:CPU run conv weight gradients with a batched
  # cotangent, which was 1.6x slower on the CNN (benchmarks/README_aggregators.md).
  m = size // num_groups
  grad_mean = jax.grad(lambda p, b: jnp.mean(loss_fn(p, b)))
  if num_groups > MAX_UNROLLED_GROUPS:  # bound the trace / compile time
    grouped = jax.tree.map(lambda x: x.reshape((num_groups, m) + x.shape[1:]),
                           batch)
    return jax.vmap(grad_mean, in_axes=(None, 0))(params, grouped)
  grads = [grad_mean(params, jax.tree.map(lambda x: x[g * m:(g + 1) * m], batch))
           for g in range(num_groups)]
  return jax.tree.map(lambda *gs: jnp.stack(gs), *grads)


@functools.partial(jax.jit, static_argnames=('loss_fn', 'num_groups'))
def per_group_grads(loss_fn, params, batch, num_groups: int):
  """Mean gradient of each of `num_groups` contiguous equal groups of examples.

  The result has a leading axis `num_groups`. It costs about one ordinary
  backward pass over the batch: one ordinary gradient per group (unrolled).

  Example:
    >>> loss_fn = lambda w, b: (b['x'] @ w) ** 2
    >>> per_group_grads(loss_fn, jnp.ones(3), {'x': jnp.ones((6, 3))}, 3).shape
    (3, 3)
  """
  return group_grads_unjitted(loss_fn, params, batch, num_groups)
