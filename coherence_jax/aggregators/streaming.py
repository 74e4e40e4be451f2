"""Winsorized / trimmed mean gradients, streamed over micro-batches.

Same result as `aggregators.winsorized_mean(c)` / `trimmed_mean(c)` applied to
all B per-example gradients, but the [B, P] per-example gradients never exist.
Two passes over the batch, each a `lax.scan` over micro-batches:
  1. the clipping bounds x_(c+1), x_(B-c) per coordinate: the c+1 largest and
     c+1 smallest values, folded micro-batch by micro-batch
     (`order_stats.threshold_fold`);
  2. the per-example gradients again, accumulating sum(clip(g, lo, hi))
     (trimmed: the sum strictly inside the bounds and the ties at them).
Pass 2 recomputes the gradients (about 2x the compute of one pass) so that no
per-example quantity is kept: peak memory is about
(microbatch_size + 2c + 3) x params and does not grow with B. Gradients come
from `factored_dense.factored_grads`: Dense-layer kernels stay as factors
and each example's outer product is formed inside the fused selection loop.
With B <= microbatch_size and B <= order_stats.MAX_UNROLLED_ROWS, one pass and
the single fused network of `order_stats.winsorized_mean` are used instead.
"""

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import microbatch
from coherence_jax._tree import PyTree
from coherence_jax.aggregators import factored_dense
from coherence_jax.aggregators import order_stats


def _check(name, c, size, microbatch_size):
  _checks.check_c(c, name)
  _checks.check_c_fits(c, size, name)
  if microbatch_size is None:
    raise ValueError(f'microbatch_size: {name} needs a positive int.')
  _checks.check_microbatch_size(microbatch_size)


def _over_microbatches(loss_fn, params, batch, microbatch_size, carry, fold):
  """Folds fold(carry, grads) over the micro-batches' factored grads."""
  return microbatch.microbatched(
      lambda acc, chunk: fold(
          acc, factored_dense.factored_grads(loss_fn, params, chunk)),
      batch, microbatch_size, combine='fold', init=carry)


def _leaf_map(fn, *trees):
  return jax.tree.map(fn, *trees, is_leaf=order_stats.is_lazy)


def streamed_bounds(loss_fn, params: PyTree, batch: PyTree, c: int,
                    microbatch_size: int) -> PyTree:
  """Per leaf (x_(c+1), x_(B-c)) of the per-example gradients; traceable."""
  init = jax.tree.map(
      lambda p: order_stats.threshold_init(jnp.shape(p), jnp.result_type(p), c),
      params)
  def fold(regs, grads):
    return jax.tree.map(lambda _, r, g: order_stats.threshold_fold(r, g),
                        params, regs, grads)

  regs = _over_microbatches(loss_fn, params, batch, microbatch_size, init, fold)
  return jax.tree.map(lambda _, r: order_stats.thresholds_from(r), params, regs)


def _one_pass(reduce_fn, loss_fn, params, batch):
  grads = factored_dense.factored_grads(loss_fn, params, batch)
  return _leaf_map(reduce_fn, grads)


def _small(size, microbatch_size):
  return size <= min(microbatch_size, order_stats.MAX_UNROLLED_ROWS)


def winsorized_mean_grad(loss_fn, params: PyTree, batch: PyTree, *, c: int,
                         microbatch_size: int) -> PyTree:
  """Winsorized mean of the per-example gradients, in bounded memory.

  Equals `winsorized_mean(c)` over `per_example_grads(loss_fn, params, batch)`.

  Example:
    >>> loss_fn = lambda w, b: (b['x'] @ w - b['y']) ** 2
    >>> batch = {'x': jnp.ones((10, 3)), 'y': jnp.arange(10.)}
    >>> winsorized_mean_grad(loss_fn, jnp.ones(3), batch, c=2,
    ...                      microbatch_size=4).shape
    (3,)
  """
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  _check('winsorized_mean_grad', c, size, microbatch_size)
  if _small(size, microbatch_size):
    return _one_pass(lambda g: order_stats.winsorized_mean(g, c), loss_fn,
                     params, batch)
  zeros = jax.tree.map(jnp.zeros_like, params)
  if c == 0:
    return jax.tree.map(lambda s: s / size, _over_microbatches(
        loss_fn, params, batch, microbatch_size, zeros,
        lambda acc, g: jax.tree.map(
            lambda a, x: a + order_stats.mean(x) * x.shape[0], acc, g)))
  bounds = streamed_bounds(loss_fn, params, batch, c, microbatch_size)
  lo = jax.tree.map(lambda _, b: b[0], params, bounds)
  hi = jax.tree.map(lambda _, b: b[1], params, bounds)

  def fold(acc, grads):
    return jax.tree.map(order_stats.clipped_sum_fold, acc, grads, lo, hi)

  total = _over_microbatches(loss_fn, params, batch, microbatch_size, zeros,
                             fold)
  return jax.tree.map(lambda s: s / size, total)


def trimmed_mean_grad(loss_fn, params: PyTree, batch: PyTree, *, c: int,
                      microbatch_size: int) -> PyTree:
  """Trimmed mean of the per-example gradients, in bounded memory.

  Equals `trimmed_mean(c)` over `per_example_grads(loss_fn, params, batch)`.

  Example:
    >>> g = trimmed_mean_grad(loss_fn, params, batch, c=2, microbatch_size=8)
    >>> g['layers'][0]['kernel'].shape
    (784, 32)
  """
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  _check('trimmed_mean_grad', c, size, microbatch_size)
  if c == 0 or _small(size, microbatch_size):
    return _one_pass(lambda g: order_stats.trimmed_mean(g, c), loss_fn,
                     params, batch) if _small(size, microbatch_size) else (
                         winsorized_mean_grad(loss_fn, params, batch, c=0,
                                              microbatch_size=microbatch_size))
  bounds = streamed_bounds(loss_fn, params, batch, c, microbatch_size)
  lo = jax.tree.map(lambda _, b: b[0], params, bounds)
  hi = jax.tree.map(lambda _, b: b[1], params, bounds)
  init = jax.tree.map(
      lambda p: order_stats.strict_middle_init(jnp.shape(p), jnp.result_type(p)),
      params)

  def fold(acc, grads):
    return jax.tree.map(lambda _, a, g, l, h: order_stats.strict_middle_fold(
        a, g, l, h), params, acc, grads, lo, hi)

  acc = _over_microbatches(loss_fn, params, batch, microbatch_size, init, fold)
  return jax.tree.map(
      lambda _, a, l, h: order_stats.trimmed_from_middle(a, l, h, size, c),
      params, acc, lo, hi)
