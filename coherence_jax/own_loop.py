"""Coherence inside your own training loop: the step's gradient and α at once.

`value_and_grad_stats` returns what `jax.value_and_grad(mean loss,
has_aux=True)` returns, with the batch's `CoherenceStats` as the aux, from
ONE backward pass: the ghost pass (per_example.ghost) already yields
S = Σ_i g_i for Q = Σ_i ‖g_i‖², so the mean gradient is S / m. Params no
ghost rule covers (all of them with method='vmap') take per-example
gradients by `jax.vmap`, whose sum is again S. The public, jitted form is
`coherence_jax.value_and_grad(loss_fn, ...)` (api.py).

Example (the gradient of the mean loss, and the batch's statistics):
  >>> step = jax.jit(lambda p, b: value_and_grad_stats(loss_fn, p, b))
  >>> (loss, stats), grads = step(params, batch)
  >>> want = jax.jit(jax.grad(lambda p, b: loss_fn(p, b).mean()))(params,
  ...                                                             batch)
  >>> bool(jnp.allclose(grads['layers'][0]['kernel'],
  ...                   want['layers'][0]['kernel'], rtol=1e-4, atol=1e-7))
  True
  >>> int(stats.count), loss.shape
  (16, ())
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import mesh_axes
from coherence_jax import microbatch
from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree
from coherence_jax.per_example import ghost
from coherence_jax.per_example import vmap_grads
from coherence_jax.stats import CoherenceStats


def value_and_grad_stats(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                         microbatch_size: Optional[int] = None,
                         axis_name: mesh_axes.AxisName = None,
                         method: str = 'auto',
                         ghost_form: Optional[str] = None
                         ) -> Tuple[Tuple[jax.Array, CoherenceStats], PyTree]:
  """((mean loss, coherence stats), mean gradient) of a batch, one backward pass.

  The layout of `jax.value_and_grad(f, has_aux=True)` for f = the mean of the
  per-example losses with the stats as aux. With `axis_name` (inside
  `jax.shard_map` / `jax.pmap`, batch sharded, params replicated) every
  output is global: the loss and gradient are the means over the examples
  of all devices (ready for the optimizer), the stats those of all of them.
  With `microbatch_size`, gradients and sums are accumulated over chunks.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses, e.g. from
      `from_nnx` (ghost norms: one backward pass at about the cost of a
      training step; params without a ghost rule take vmap gradients).
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.
    microbatch_size: examples processed at once; None: all at once.
    axis_name: the mesh axis (or axes) the batch is sharded over inside
      `jax.shard_map` / `jax.pmap`; required there.
    method: 'auto', 'ghost' or 'vmap' (see `coherence_stats`).
    ghost_form: None, 'gram' or 'materialize' (see `coherence_stats`).

  Returns:
    `((mean_loss, stats), mean_grads)`: the float32 mean loss, the
    `CoherenceStats` (equal to `coherence_stats` on the batch) and the
    gradient of the mean loss, params-shaped in the params' dtypes (equal to
    `jax.grad` of the mean loss up to float32 summation order).

  Raises:
    ValueError: as `coherence_stats` (bad method / form / microbatch_size, a
      loss that is not per-example, an empty batch, a sharded batch without
      `axis_name`).
  """
  ghost.check_ghost_args(loss_fn, method, ghost_form)
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  mesh_axes.check_axis_name(axis_name, batch)
  local = mesh_axes.as_varying(params, axis_name)
  top_level = microbatch_size is None or microbatch_size >= size

  if ghost.uses_ghost(loss_fn, method):
    def chunk_pass(chunk):
      out = ghost.scaled_sum_and_sq_norms(
          loss_fn, local, chunk, method=method, ghost_form=ghost_form,
          axis_name=axis_name, top_level=top_level)
      stats = CoherenceStats.from_sums(
          out.sum_grads, jax.tree.map(jnp.sum, out.sq_norms),
          _checks.batch_size(chunk), scale=out.scale)
      return stats, out.losses
  else:
    one = vmap_grads.single_example_loss(loss_fn)

    def chunk_pass(chunk):
      losses, grads = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0))(
          local, chunk)
      return CoherenceStats.from_grads(grads), losses

  def fold(carry, chunk):
    stats, loss_sum = carry
    chunk_stats, losses = chunk_pass(chunk)
    return (stats.merge(chunk_stats),
            loss_sum + jnp.sum(jnp.asarray(losses, jnp.float32)))

  init = mesh_axes.as_varying(
      (CoherenceStats.zeros(params), jnp.zeros((), jnp.float32)), axis_name)
  stats, loss_sum = microbatch.microbatched(fold, batch, microbatch_size,
                                            combine='fold', init=init)
  if axis_name is not None:
    stats = stats.psum(axis_name)
    loss_sum = jax.lax.psum(loss_sum, axis_name)
  count = stats.count.astype(jnp.float32)
  grads = jax.tree.map(lambda s, p: (s / count).astype(jnp.result_type(p)),
                       stats.sum_grads, params)
  return (loss_sum / count, stats), grads
