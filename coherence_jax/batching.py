"""Checks and splits for batches: pytrees of arrays that share a leading example axis."""

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


def _path_str(path) -> str:
  return jax.tree_util.keystr(path) or '<root>'


def batch_size(batch: PyTree, *, arg_name: str = 'batch') -> int:
  """Returns the shared leading size of every leaf of `batch`.

  >>> batch_size({'image': jnp.zeros((8, 28, 28, 1)), 'label': jnp.zeros(8)})
  8
  """
  leaves = jax.tree_util.tree_leaves_with_path(batch)
  if not leaves:
    raise ValueError(
        f'{arg_name}: got an empty pytree; pass a pytree of arrays whose leaves '
        'share a leading example axis, e.g. {"image": [B, ...], "label": [B]}.')
  sizes = {}
  for path, leaf in leaves:
    shape = jnp.shape(leaf)
    if not shape:
      raise ValueError(
          f'{arg_name}: leaf {_path_str(path)} is a scalar; every leaf needs a '
          'leading example axis of size B.')
    sizes[_path_str(path)] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(
        f'{arg_name}: leaves have different leading sizes {sizes}; every leaf '
        'must share the same leading example axis B.')
  return next(iter(sizes.values()))


def check_microbatch_size(microbatch_size: Optional[int]) -> None:
  if microbatch_size is not None and (
      not isinstance(microbatch_size, int) or microbatch_size <= 0):
    raise ValueError(
        f'microbatch_size: got {microbatch_size!r}; pass a positive int (the '
        'number of examples processed at once) or None for the whole batch.')


def check_per_example_loss(loss_fn: LossFn, params: PyTree,
                           batch: PyTree) -> int:
  """Checks that `loss_fn(params, batch)` returns per-example losses [B]."""
  size = batch_size(batch)
  out = jax.eval_shape(loss_fn, params, batch)
  shape = getattr(out, 'shape', None)
  if shape != (size,):
    raise ValueError(
        f'loss_fn: must return per-example losses of shape [B] = ({size},), got '
        f'{shape}. Return the unreduced losses (e.g. without jnp.mean).')
  return size


def split_microbatches(batch: PyTree, microbatch_size: int,
                       size: int) -> Tuple[Optional[PyTree], Optional[PyTree]]:
  """Splits `batch` into ([n, microbatch_size, ...] chunks, remainder).

  Either part is None when empty. Every example is in exactly one part.
  """
  num_full = size // microbatch_size
  cut = num_full * microbatch_size
  chunks = None
  if num_full:
    chunks = jax.tree.map(
        lambda x: x[:cut].reshape((num_full, microbatch_size) + x.shape[1:]),
        batch)
  tail = jax.tree.map(lambda x: x[cut:], batch) if cut < size else None
  return chunks, tail


def single_example_loss(loss_fn: LossFn) -> Callable[[PyTree, PyTree], jax.Array]:
  """Turns a per-example-loss batch function into a scalar loss of one example."""

  def loss_of_one(params, example):
    return loss_fn(params, jax.tree.map(lambda x: x[None], example))[0]

  return loss_of_one


def as_varying(params: PyTree, axis_name: Optional[str]) -> PyTree:
  """Marks replicated params as device-varying so grads stay per-device.

  Inside `jax.shard_map`, the gradient with respect to a value that is
  invariant over `axis_name` comes back already summed over devices. Per-example
  (local) gradients need the params marked varying first.
  """
  if axis_name is None:
    return params

  def cast(x):
    vma = getattr(jax.typeof(x), 'vma', frozenset())
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    missing = tuple(n for n in names if n not in vma)
    if not missing:
      return x
    return jax.lax.pcast(x, missing, to='varying')

  return jax.tree.map(cast, params)
