"""Input checks shared by the public functions: clear errors, named arguments."""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors

from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree
from coherence_jax._tree import path_str


def batch_size(batch: PyTree, *, arg_name: str = 'batch') -> int:
  """Returns the shared leading size B >= 1 of every leaf of `batch`.

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
          f'{arg_name}: leaf {path_str(path)} is a scalar; every leaf needs a '
          'leading example axis of size B.')
    sizes[path_str(path)] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(
        f'{arg_name}: leaves have different leading sizes {sizes}; every leaf '
        'must share the same leading example axis B.')
  size = next(iter(sizes.values()))
  if size == 0:
    raise ValueError(f'{arg_name}: has no examples (B = 0); pass at least one.')
  return size


def check_microbatch_size(microbatch_size: Optional[int]) -> None:
  """None or a positive int, else a ValueError naming `microbatch_size`."""
  if microbatch_size is not None and (
      not isinstance(microbatch_size, int) or isinstance(microbatch_size, bool)
      or microbatch_size <= 0):
    raise ValueError(
        f'microbatch_size: got {microbatch_size!r}; pass a positive int (the '
        'number of examples processed at once) or None for the whole batch.')


def check_c(c, name: str) -> None:
  """`c` (values clipped / dropped at each end) is a non-negative int."""
  if not isinstance(c, int) or isinstance(c, bool) or c < 0:
    raise ValueError(f'{name}: c must be a non-negative int, got {c!r}.')


def check_c_fits(c: int, size: int, name: str) -> None:
  """2c + 1 <= B: at least one value survives the clipping / trimming."""
  if 2 * c + 1 > size:
    raise ValueError(
        f'{name}: c={c} needs at least 2c+1 = {2 * c + 1} examples, got '
        f'B={size}; use c <= {(size - 1) // 2} or a larger batch.')


def check_method(method: str, allowed) -> None:
  if method not in allowed:
    raise ValueError(f'method: got {method!r}; pass one of {tuple(allowed)}.')


def check_float_params(params: PyTree) -> None:
  """Every param leaf is a floating-point array (gradients need it)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise ValueError(
          f'params: leaf {path_str(path)} has dtype {dtype}; per-example '
          'gradients need floating-point params. Keep integer state (step '
          'counters, indices) out of params, e.g. in the batch or a closure.')


def check_per_example_loss(loss_fn: LossFn, params: PyTree,
                           batch: PyTree) -> int:
  """Checks that `loss_fn(params, batch)` returns per-example losses [B]."""
  size = batch_size(batch)
  check_float_params(params)
  try:
    out = jax.eval_shape(loss_fn, params, batch)
  except flax_errors.TraceContextError as e:
    raise ValueError(
        f'loss_fn: the model mutates its state while computing the loss ({e}). '
        'Per-example gradients need the model in inference mode: from_nnx '
        'calls model.eval(), but a use_running_average=False (BatchNorm) or '
        'deterministic=False (Dropout) hard-coded in __call__ overrides it; '
        'make it follow the module attribute instead.') from None
  shape = getattr(out, 'shape', None)
  if shape != (size,):
    raise ValueError(
        f'loss_fn: must return per-example losses of shape [B] = ({size},), got '
        f'{shape}. Return the unreduced losses (e.g. without jnp.mean).')
  return size


def check_examples_independent(loss_fn: LossFn, params: PyTree,
                               batch: PyTree) -> None:
  """Raises if example 0's loss changes when only example 1 changes.

  A cheap probe on the first two examples (concrete values only): losses that
  couple examples (train-mode BatchNorm, `x - x.mean(0)`, ...) make
  per-example gradients ill-defined. Skipped for B < 2, under tracing, and
  for batches without a floating-point leaf to perturb.
  """
  leaves = jax.tree.leaves(batch)
  if any(isinstance(x, jax.core.Tracer) for x in leaves + jax.tree.leaves(
      params)):
    return
  if batch_size(batch) < 2:
    return
  pair = jax.tree.map(lambda x: np.asarray(x[:2]), batch)
  floats = [i for i, x in enumerate(jax.tree.leaves(pair))
            if np.issubdtype(x.dtype, np.floating)]
  if not floats:
    return
  flat, treedef = jax.tree.flatten(pair)
  moved = list(flat)
  for i in floats:
    x = np.array(flat[i], np.float64)
    scale = np.max(np.abs(x)) if x.size and np.all(np.isfinite(x)) else 1.0
    x[1] = x[1] + (scale or 1.0) * 0.5 + 0.25
    moved[i] = x.astype(flat[i].dtype)
  before = np.asarray(loss_fn(params, pair))
  after = np.asarray(loss_fn(params, jax.tree.unflatten(treedef, moved)))
  if not np.all(np.isfinite(before[:1])):
    return
  # Independent examples give bit-identical row 0 up to kernel choice for a
  # different input; 1e-4 relative is far above float32 rounding of one loss.
  if abs(float(after[0]) - float(before[0])) > 1e-4 * (
      1.0 + abs(float(before[0]))):
    raise ValueError(
        f"loss_fn: example 0's loss changed ({float(before[0])!r} -> "
        f"{float(after[0])!r}) when only example 1 changed, so the examples "
        'of a batch are coupled (train-mode BatchNorm, dropout keyed per '
        'batch, normalization over the batch, ...). Per-example gradients need '
        'independent examples: run the model in inference mode (from_nnx does '
        'model.eval(); a use_running_average=False / deterministic=False '
        'hard-coded in __call__ defeats it). Pass check_independence=False to '
        'skip this check.')
