"""Per-example and per-group gradients by `jax.vmap` of `jax.grad`, micro-batched.

`loss_fn(params, batch)` returns per-example losses of shape [B]; `batch` is a
pytree of arrays with a leading example axis B. These are plain traceable
functions; `coherence_jax.per_example_grads` / `per_group_grads` are their
jitted forms.

Example (loss (x·w)², gradient 2 (x·w) x per example):
  >>> loss = lambda w, b: (b['x'] @ w) ** 2
  >>> vmapped_grads(loss, jnp.ones(2), {'x': jnp.array([[1., 0.], [1., 1.]])})
  Array([[2., 0.],
         [4., 4.]], dtype=float32)
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import microbatch
from coherence_jax import mesh_axes
from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree

# per_group_grads unrolls up to this many groups and vmaps over more.
MAX_UNROLLED_GROUPS = 16


def single_example_loss(loss_fn: LossFn) -> Callable[[PyTree, PyTree], jax.Array]:
  """Turns a per-example-loss batch function into a scalar loss of one example.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`.

  Returns:
    `loss_of_one(params, example) -> scalar`, where `example` is one example
    of the batch (no leading axis); it calls `loss_fn` on a batch of one.

  Example:
    >>> loss_of_one = single_example_loss(lambda w, b: (b['x'] @ w) ** 2)
    >>> loss_of_one(jnp.ones(2), {'x': jnp.array([1., 2.])})
    Array(9., dtype=float32)
  """

  def loss_of_one(params, example):
    return loss_fn(params, jax.tree.map(lambda x: x[None], example))[0]

  return loss_of_one


def vmapped_grads(loss_fn: LossFn, params: PyTree, batch: PyTree) -> PyTree:
  """Per-example gradients of one chunk: vmap over examples of jax.grad.

  No checks and no micro-batching (see `per_example_grads`).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.

  Returns:
    Per-example gradients, [B, *param.shape] per leaf.

  Example:
    >>> loss = lambda w, b: b['x'] @ w          # gradient x per example
    >>> vmapped_grads(loss, jnp.ones(2), {'x': jnp.array([[1., 2.], [3., 4.]])})
    Array([[1., 2.],
           [3., 4.]], dtype=float32)
  """
  return jax.vmap(jax.grad(single_example_loss(loss_fn)),
                  in_axes=(None, 0))(params, batch)


def per_example_grads(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                      microbatch_size: Optional[int] = None,
                      axis_name: mesh_axes.AxisName = None) -> PyTree:
  """Gradient of each example's loss: a params-shaped pytree with leading axis B.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.
    microbatch_size: examples processed at once (memory bound); every example
      is counted once even if it does not divide B. None: all at once.
    axis_name: inside `jax.shard_map` with the batch sharded over a mesh
      axis, that axis (each device returns its own examples' gradients).

  Returns:
    Per-example gradients, [B, *param.shape] per leaf.

  Raises:
    ValueError: a loss that is not per-example, an empty batch, a bad
      `microbatch_size`, or a sharded batch without `axis_name`.

  Example:
    >>> squared_error = lambda w, b: (b['x'] @ w - b['y']) ** 2
    >>> g = per_example_grads(squared_error, jnp.ones(3),
    ...                       {'x': jnp.ones((5, 3)), 'y': jnp.arange(5.)},
    ...                       microbatch_size=2)   # 2 (x·w - y) x
    >>> g[:, 0]
    Array([ 6.,  4.,  2.,  0., -2.], dtype=float32)
    >>> g = per_example_grads(loss_fn, params, batch)   # from_nnx(MLP(...))
    >>> jax.tree.map(jnp.shape, g['layers'][1])
    {'bias': (16, 10), 'kernel': (16, 32, 10)}
  """
  _checks.check_per_example_loss(loss_fn, params, batch)
  mesh_axes.check_axis_name(axis_name, batch)
  params = mesh_axes.as_varying(params, axis_name)
  return microbatch.microbatched(
      lambda chunk: vmapped_grads(loss_fn, params, chunk), batch,
      microbatch_size, combine='concat')


def per_group_grads(loss_fn: LossFn, params: PyTree, batch: PyTree,
                    num_groups: int, *,
                    axis_name: mesh_axes.AxisName = None) -> PyTree:
  """Mean gradient of each of `num_groups` contiguous equal groups of examples.

  It costs about one ordinary backward pass over the batch: one ordinary
  gradient per group (unrolled up to MAX_UNROLLED_GROUPS groups).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.
    num_groups: number of groups; must divide B.
    axis_name: inside `jax.shard_map`, the mesh axis the batch is sharded
      over (groups are formed from each device's local examples).

  Returns:
    Group-mean gradients, [num_groups, *param.shape] per leaf.

  Raises:
    ValueError: `num_groups` is not a positive int dividing B, a loss that is
      not per-example, an empty batch, or a sharded batch without
      `axis_name`.

  Example:
    >>> loss = lambda w, b: (b['x'] @ w) ** 2      # gradient 2 (x·w) x
    >>> x = jnp.arange(6.)[:, None] * jnp.ones((6, 2))   # example i: (i, i)
    >>> per_group_grads(loss, jnp.ones(2), {'x': x}, 3)  # group means of 4 i²
    Array([[ 2.,  2.],
           [26., 26.],
           [82., 82.]], dtype=float32)
    >>> per_group_grads(loss, jnp.ones(2), {'x': x}, 4)
    Traceback (most recent call last):
    ValueError: num_groups: got 4 for a batch of 6 examples; ...
  """
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  if not _checks.is_int(num_groups) or num_groups <= 0 or size % num_groups:
    raise ValueError(
        f'num_groups: got {num_groups!r} for a batch of {size} examples; pass a '
        'positive int that divides the batch size into equal groups.')
  num_groups = int(num_groups)
  mesh_axes.check_axis_name(axis_name, batch)
  params = mesh_axes.as_varying(params, axis_name)
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
