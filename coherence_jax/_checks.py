"""Input checks shared by the public functions: clear errors, named arguments.

Each check raises a ValueError whose message starts with the name of the
argument at fault and says what to pass instead.

Example:
  >>> check_microbatch_size(0)
  Traceback (most recent call last):
  ValueError: microbatch_size: got 0; pass a positive int (the number of ...
"""

import numbers
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

  Args:
    batch: pytree of arrays with a leading example axis.
    arg_name: the argument name used in error messages.

  Returns:
    B, the leading size shared by every leaf.

  Raises:
    ValueError: an empty pytree, a scalar leaf, leaves with different leading
      sizes, or B = 0.

  Example:
    >>> batch_size({'image': jnp.zeros((8, 28, 28, 1)), 'label': jnp.zeros(8)})
    8
    >>> batch_size({'image': jnp.zeros((8, 784)), 'label': jnp.zeros(4)})
    Traceback (most recent call last):
    ValueError: batch: leaves have different leading sizes {'image': 8, ...
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


def is_int(value) -> bool:
  """Whether `value` is an integer: a Python or numpy one, but no bool.

  The one test behind every integer argument (sizes, counts, c, windows):
  numpy integers (`np.int64(2)`, e.g. read from an array) are accepted;
  True / False and `np.bool_` are not (they are ints to Python, but passing
  one is a mistake). Floats, even integral ones, are not.

  Example:
    >>> [is_int(v) for v in (2, np.int64(2), True, np.bool_(True), 2.0)]
    [True, True, False, False, False]
  """
  return (isinstance(value, (numbers.Integral, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def check_microbatch_size(microbatch_size: Optional[int]) -> None:
  """None or a positive int, else a ValueError naming `microbatch_size`.

  Args:
    microbatch_size: the value to check.

  Raises:
    ValueError: anything but None or a positive int (bools included).

  Example:
    >>> check_microbatch_size(None); check_microbatch_size(32)
    >>> check_microbatch_size(True)
    Traceback (most recent call last):
    ValueError: microbatch_size: got True; pass a positive int (the number ...
  """
  if microbatch_size is not None and (not is_int(microbatch_size)
                                      or microbatch_size <= 0):
    raise ValueError(
        f'microbatch_size: got {microbatch_size!r}; pass a positive int (the '
        'number of examples processed at once) or None for the whole batch.')


def check_c(c, name: str) -> None:
  """`c` (values clipped / dropped at each end) is a non-negative int.

  Args:
    c: the number of values clipped (winsorized) or dropped (trimmed) at each
      end of the sorted per-example values.
    name: the calling function, used in the error message.

  Raises:
    ValueError: `c` is not a non-negative int (bools included).

  Example:
    >>> check_c(-1, 'trimmed_mean')
    Traceback (most recent call last):
    ValueError: trimmed_mean: c must be a non-negative int, got -1.
  """
  if not is_int(c) or c < 0:
    raise ValueError(f'{name}: c must be a non-negative int, got {c!r}.')


def check_c_fits(c: int, size: int, name: str) -> None:
  """2c + 1 <= B: at least one value survives the clipping / trimming.

  Args:
    c: values clipped / dropped at each end.
    size: the number of examples B.
    name: the calling function, used in the error message.

  Raises:
    ValueError: 2c + 1 > B.

  Example:
    >>> check_c_fits(2, 5, 'winsorized_mean')
    >>> check_c_fits(2, 4, 'winsorized_mean')
    Traceback (most recent call last):
    ValueError: winsorized_mean: c=2 needs at least 2c+1 = 5 examples, got B=4...
  """
  if 2 * c + 1 > size:
    raise ValueError(
        f'{name}: c={c} needs at least 2c+1 = {2 * c + 1} examples, got '
        f'B={size}; use c <= {(size - 1) // 2} or a larger batch.')


def check_method(method: str, allowed) -> None:
  """`method` is one of `allowed`.

  Args:
    method: the value to check.
    allowed: the accepted values.

  Raises:
    ValueError: `method` is not in `allowed`.

  Example:
    >>> check_method('ghost', ('ghost', 'auto', 'vmap'))
    >>> check_method('fast', ('ghost', 'auto', 'vmap'))
    Traceback (most recent call last):
    ValueError: method: got 'fast'; pass one of ('ghost', 'auto', 'vmap').
  """
  if method not in allowed:
    raise ValueError(f'method: got {method!r}; pass one of {tuple(allowed)}.')


def check_float_params(params: PyTree) -> None:
  """Every param leaf is a floating-point array (gradients need it).

  Args:
    params: pytree of arrays.

  Raises:
    ValueError: a leaf with an integer or boolean dtype (named by path).

  Example:
    >>> check_float_params({'w': jnp.ones(3)})
    >>> check_float_params({'w': jnp.ones(3), 'step': jnp.int32(0)})
    Traceback (most recent call last):
    ValueError: params: leaf step has dtype int32; per-example gradients ...
  """
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise ValueError(
          f'params: leaf {path_str(path)} has dtype {dtype}; per-example '
          'gradients need floating-point params. Keep integer state (step '
          'counters, indices) out of params, e.g. in the batch or a closure.')


def unsharded(batch: PyTree) -> PyTree:
  """Shapes and dtypes of `batch`, without its sharding.

  For checks traced outside the per-device program: a batch sharded over an
  Explicit mesh axis (`jax.make_mesh`'s default in jax 0.10) would carry its
  sharding into that trace, where the model's reshapes and gathers (pooling
  windows, embedding lookups) need an `out_sharding`; inside `jax.shard_map`
  every device sees its own examples, unsharded.

  Example:
    >>> unsharded({'x': np.ones((2, 3), np.float32)})
    {'x': ShapeDtypeStruct(shape=(2, 3), dtype=float32)}
  """
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x),
                                                     jnp.result_type(x)),
                      batch)


def check_per_example_loss(loss_fn: LossFn, params: PyTree,
                           batch: PyTree) -> int:
  """Checks that `loss_fn(params, batch)` returns per-example losses [B].

  Traces `loss_fn` once with `jax.eval_shape` (nothing is computed).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.

  Returns:
    B.

  Raises:
    ValueError: a bad batch (see `batch_size`), non-float params, a model
      that mutates its state while computing the loss (e.g. train-mode
      BatchNorm hard-coded in `__call__`), or an output that is not of shape
      [B] (e.g. a mean loss).

  Example:
    >>> check_per_example_loss(loss_fn, params, batch)
    16
    >>> mean_loss = lambda p, b: loss_fn(p, b).mean()
    >>> check_per_example_loss(mean_loss, params, batch)
    Traceback (most recent call last):
    ValueError: loss_fn: must return per-example losses of shape [B] = (16,)...
  """
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


def _leading_rows(x, n: int) -> np.ndarray:
  """x[:n] on the host; reads only the first shard of a sharded array.

  (Indexing a batch sharded over an Explicit mesh axis is a sharding error,
  and np.asarray(x) would copy the whole batch.)
  """
  for shard in getattr(x, 'addressable_shards', ()):
    rows = shard.index[0] if shard.index else slice(None)
    if rows.start in (None, 0) and shard.data.shape[0] >= n:
      return np.asarray(shard.data[:n])
  return np.asarray(x)[:n]


def _moved_second_example(flat):
  """The leaves with example 1 changed, or None when nothing can change.

  Floating-point leaves of example 1 are shifted (integer leaves, labels,
  kept). A batch of integer leaves only (token ids) gets example 1's row set
  to one token throughout: the largest value of the leaf if the row holds
  its smallest (padding, usually 0), else the smallest; so the number of
  padding tokens changes, and a loss normalized by the batch's token count
  shows up as coupled.
  """
  floats = [i for i, x in enumerate(flat) if np.issubdtype(x.dtype, np.floating)]
  ints = [i for i, x in enumerate(flat)
          if np.issubdtype(x.dtype, np.integer) and x.size]
  moved = list(flat)
  if floats:
    for i in floats:
      x = np.array(flat[i], np.float64)
      scale = np.max(np.abs(x)) if x.size and np.all(np.isfinite(x)) else 1.0
      x[1] = x[1] + (scale or 1.0) * 0.5 + 0.25
      moved[i] = x.astype(flat[i].dtype)
    return moved
  changed = False
  for i in ints:
    x = np.array(flat[i])
    low, high = x.min(), x.max()
    x[1] = high if np.any(x[1] == low) else low
    changed = changed or not np.array_equal(x, flat[i])
    moved[i] = x
  return moved if changed else None


def check_examples_independent(loss_fn: LossFn, params: PyTree,
                               batch: PyTree) -> None:
  """Raises if example 0's loss changes when only example 1 changes.

  A cheap probe on the first two examples (concrete values only): losses that
  couple examples (train-mode BatchNorm, `x - x.mean(0)`, ...) make
  per-example gradients ill-defined. Every floating-point leaf of example 1
  is shifted; integer leaves (labels) are kept; a batch of integer leaves
  only (a language model's tokens) gets example 1's tokens replaced, its
  padding count changed. Skipped for B < 2, under tracing, for batches with
  nothing to change, and when example 0's loss is not finite. Runs `loss_fn`
  twice on two examples.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.

  Raises:
    ValueError: example 0's loss moved by more than 1e-4 relative.

  Example:
    >>> check_examples_independent(loss_fn, params, batch)
    >>> coupled = lambda w, b: (b['x'] - b['x'].mean(0)) @ w
    >>> check_examples_independent(coupled, jnp.ones(2),
    ...                            {'x': jnp.ones((4, 2))})
    Traceback (most recent call last):
    ValueError: loss_fn: example 0's loss changed (0.0 -> -0.75) when only ...
  """
  leaves = jax.tree.leaves(batch)
  if any(isinstance(x, jax.core.Tracer) for x in leaves + jax.tree.leaves(
      params)):
    return
  if batch_size(batch) < 2:
    return
  if not all(getattr(x, 'is_fully_addressable', True) for x in leaves):
    return  # a multi-process global batch: no process can read rows 0 and 1
  pair = jax.tree.map(lambda x: _leading_rows(x, 2), batch)
  flat, treedef = jax.tree.flatten(pair)
  moved = _moved_second_example(flat)
  if moved is None:
    return
  # One compiled program for both calls (eagerly, every op of the model would
  # compile on its own: ~25 programs for a 2-layer MLP, hundreds for a ResNet).
  pair_loss = jax.jit(loss_fn)
  before = np.asarray(pair_loss(params, pair))
  after = np.asarray(pair_loss(params, jax.tree.unflatten(treedef, moved)))
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
        'batch, normalization over the batch, a loss divided by the batch\'s '
        'token count, ...). Per-example gradients need independent examples: '
        'run the model in inference mode (from_nnx does model.eval(); a '
        'use_running_average=False / deterministic=False hard-coded in '
        '__call__ defeats it); divide each example\'s loss by its own token '
        'count or by a constant, not by a count over the batch. Pass '
        'check_independence=False to skip this check.')
