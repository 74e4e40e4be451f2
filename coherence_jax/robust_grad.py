"""Winsorized / trimmed mean gradients, streamed over micro-batches.

Same result as `aggregators.winsorized_mean(c)` / `trimmed_mean(c)` applied to
all B per-example gradients, but the [B, P] per-example gradients never exist:
micro-batches of per-example gradients are folded (`lax.scan`) into an
`order_stats.Extremes` summary per leaf (the c largest and c smallest values
plus the sum, max and min of the rest). Peak memory is about
(microbatch_size + 2c + 3) x params and does not grow with B.
"""

import functools

import jax

from coherence_jax import batching
from coherence_jax import order_stats

PyTree = batching.PyTree


def _check(name, c, size, microbatch_size):
  if not isinstance(c, int) or isinstance(c, bool) or c < 0:
    raise ValueError(f'{name}: c must be a non-negative int, got {c!r}.')
  if 2 * c + 1 > size:
    raise ValueError(
        f'{name}: c={c} needs at least 2c+1 = {2 * c + 1} examples, got '
        f'B={size}; use c <= {(size - 1) // 2} or a larger batch.')
  if microbatch_size is None:
    raise ValueError(f'{name}: pass microbatch_size, a positive int.')
  batching.check_microbatch_size(microbatch_size)


def streamed_extremes(loss_fn, params: PyTree, batch: PyTree, c: int,
                      microbatch_size: int) -> PyTree:
  """Per-leaf `Extremes` of the per-example gradients, micro-batch by micro-batch.

  Traceable. The first ceil(2c / microbatch_size) micro-batches seed the
  summaries; the full micro-batches after them go through `lax.scan`, then the
  remainder, so every example is counted exactly once.
  """
  size = batching.batch_size(batch)
  grad_one = jax.vmap(jax.grad(batching.single_example_loss(loss_fn)),
                      in_axes=(None, 0))
  m = microbatch_size
  head_n = min(size, m * max(1, -(-2 * c // m)))
  head = grad_one(params, jax.tree.map(lambda x: x[:head_n], batch))
  ext = jax.tree.map(lambda g: order_stats.summarize(g, c), head)

  def fold(ext, grads):
    return jax.tree.map(order_stats.insert_rows, ext, grads,
                        is_leaf=lambda e: isinstance(e, order_stats.Extremes))

  rest = jax.tree.map(lambda x: x[head_n:], batch)
  chunks, tail = batching.split_microbatches(rest, m, size - head_n)
  if chunks is not None:
    ext, _ = jax.lax.scan(
        lambda e, chunk: (fold(e, grad_one(params, chunk)), None), ext, chunks)
  if tail is not None:
    ext = fold(ext, grad_one(params, tail))
  return ext


def _finalize(finalize_fn, ext, size):
  return jax.tree.map(lambda e: finalize_fn(e, size), ext,
                      is_leaf=lambda e: isinstance(e, order_stats.Extremes))


@functools.partial(jax.jit,
                   static_argnames=('loss_fn', 'c', 'microbatch_size'))
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
  size = batching.check_per_example_loss(loss_fn, params, batch)
  _check('winsorized_mean_grad', c, size, microbatch_size)
  ext = streamed_extremes(loss_fn, params, batch, c, microbatch_size)
  return _finalize(order_stats.winsorized_from, ext, size)


@functools.partial(jax.jit,
                   static_argnames=('loss_fn', 'c', 'microbatch_size'))
def trimmed_mean_grad(loss_fn, params: PyTree, batch: PyTree, *, c: int,
                      microbatch_size: int) -> PyTree:
  """Trimmed mean of the per-example gradients, in bounded memory.

  Equals `trimmed_mean(c)` over `per_example_grads(loss_fn, params, batch)`.

  Example:
    >>> trimmed_mean_grad(loss_fn, params, batch, c=2, microbatch_size=32)
  """
  size = batching.check_per_example_loss(loss_fn, params, batch)
  _check('trimmed_mean_grad', c, size, microbatch_size)
  ext = streamed_extremes(loss_fn, params, batch, c, microbatch_size)
  return _finalize(order_stats.trimmed_from, ext, size)
