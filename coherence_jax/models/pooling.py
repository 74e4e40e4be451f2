"""Max pooling whose gradient XLA fuses (measured on XLA:CPU).

`nnx.max_pool` differentiates through `select_and_scatter`, which XLA:CPU runs
as an argmax reduce-window plus a scatter: at batch 128 its vjp took 32 ms on a
28x28x32 map, a third of the benchmark CNN's whole gradient. For
non-overlapping windows (stride == window, no padding: the common 2x2 pool) a
reshape and a max over the window axes computes the same forward pass, and its
gradient is elementwise (compare, select, reduce), which XLA fuses.

Example:
  >>> max_pool(jnp.arange(16.).reshape(1, 4, 4, 1), (2, 2))[0, :, :, 0]
  Array([[ 5.,  7.],
         [13., 15.]], dtype=float32)
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from coherence_jax import _checks


def max_pool(x: jax.Array, window: Sequence[int]) -> jax.Array:
  """Max over non-overlapping windows of the spatial axes of NHWC-like `x`.

  Same values as `nnx.max_pool(x, window, strides=window)` ('VALID': trailing
  rows/columns that do not fill a window are dropped). Gradients agree wherever
  a window's maximum is unique; on ties this one splits the cotangent equally
  among the tied entries (JAX's rule for `jnp.max`) where `select_and_scatter`
  gives it all to one. After a ReLU the common tie is at 0, where the ReLU's
  own gradient is 0, so the network's gradient is unchanged.

  Args:
    x: array (batch, *spatial, channels), at least one spatial axis.
    window: one positive int per spatial axis; also the stride.

  Returns:
    (batch, *[n // w for each spatial n, window w], channels).

  Raises:
    ValueError: `x` has fewer than 3 axes, `window` does not give one positive
      int per spatial axis, or a window is larger than its axis.

  Example:
    >>> max_pool(jnp.ones((2, 28, 28, 3)), (2, 2)).shape
    (2, 14, 14, 3)
    >>> max_pool(jnp.ones((2, 7, 7, 3)), (2, 2)).shape  # row 7, column 7 dropped
    (2, 3, 3, 3)
    >>> max_pool(jnp.ones((2, 28, 28, 3)), 2)
    Traceback (most recent call last):
    ValueError: max_pool: window=2 must be a tuple of one positive int per ...
  """
  if getattr(x, 'ndim', 0) < 3:
    raise ValueError(
        f'max_pool: x has shape {getattr(x, "shape", None)}; pass an array '
        'shaped (batch, *spatial, channels) with at least one spatial axis.')
  spatial = x.shape[1:-1]
  if (not isinstance(window, (tuple, list)) or len(window) != len(spatial)
      or not all(_checks.is_int(w) and w >= 1 for w in window)):
    raise ValueError(
        f'max_pool: window={window!r} must be a tuple of one positive int per '
        f'spatial axis of x (shape {x.shape}), e.g. {(2,) * len(spatial)}.')
  window = tuple(int(w) for w in window)
  kept = [n // w for n, w in zip(spatial, window)]
  if min(kept, default=1) < 1:
    raise ValueError(f'max_pool: window={window} is larger than the spatial '
                     f'shape {spatial} of x; use a smaller window.')
  x = x[(slice(None),) + tuple(slice(0, k * w) for k, w in zip(kept, window))]
  split = [x.shape[0]]
  for k, w in zip(kept, window):
    split += [k, w]
  x = x.reshape(split + [x.shape[-1]])
  return jnp.max(x, axis=tuple(range(2, 2 * len(window) + 1, 2)))
