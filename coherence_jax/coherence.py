"""coherence_stats: the coherence statistics of a batch's per-example gradients.

Data flow: loss_fn + params + batch -> per micro-batch, per-example gradients
(vmap) or S and ghost norms (per_example.ghost) -> `CoherenceStats` -> merged
over micro-batches -> psum-ed over `axis_name` (devices, hosts).

Example (16 copies of one example: every gradient is the same, so the
m-coherence is m = 16):
  >>> same = jax.tree.map(lambda x: jnp.repeat(x[:1], 16, axis=0), batch)
  >>> round(float(coherence_stats(loss_fn, params, same).m_coherence()), 3)
  16.0
"""

from typing import Optional

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import microbatch
from coherence_jax import mesh_axes
from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree
from coherence_jax.per_example import ghost
from coherence_jax.per_example import vmap_grads
from coherence_jax.stats import CoherenceStats

METHODS = ghost.METHODS


def coherence_stats(loss_fn: LossFn, params: PyTree, batch: PyTree, *,
                    microbatch_size: Optional[int] = None,
                    axis_name: mesh_axes.AxisName = None,
                    method: str = 'auto',
                    ghost_form: Optional[str] = None) -> CoherenceStats:
  """Coherence statistics (S, Q per leaf, m) of the per-example gradients.

  Streams the batch `microbatch_size` examples at a time: at most one
  micro-batch of per-example gradients is alive. With `axis_name`, the sums
  are psum-ed over that mesh axis, so the same call works inside
  `jax.shard_map` (batch sharded, params replicated) and `jax.pmap`.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses, e.g. from
      `from_nnx` (needed for ghost norms).
    params: pytree of float arrays (replicated inside shard_map).
    batch: pytree of arrays with a shared leading example axis B.
    microbatch_size: examples processed at once; None: all at once.
    axis_name: the mesh axis (or tuple of axes) the batch is sharded over
      inside `jax.shard_map` / `jax.pmap`; required there.
    method: 'auto' (ghost norms where possible, vmap elsewhere), 'ghost'
      (ghost norms only; unsupported layers are an error) or 'vmap'
      (materialized per-example gradients).
    ghost_form: None (cheaper form per layer), 'gram' or 'materialize'.

  Returns:
    The merged `CoherenceStats` of all B examples (of all devices with
    `axis_name`).

  Raises:
    ValueError: a bad method / form / microbatch_size, a loss that is not
      per-example, an empty batch, or a sharded batch without `axis_name`.

  Example:
    >>> stats = coherence_stats(loss_fn, params, batch)  # from_nnx(MLP(...))
    >>> int(stats.count), stats.sum_grads['layers'][0]['kernel'].shape
    (16, (784, 32))
    >>> 0.0 <= float(stats.alpha()) <= 1.0
    True
    >>> chunked = coherence_stats(loss_fn, params, batch, microbatch_size=8)
    >>> bool(jnp.allclose(chunked.m_coherence(), stats.m_coherence(),
    ...                   rtol=1e-4))
    True
    >>> both = stats.merge(coherence_stats(loss_fn, params, other_batch))
    >>> int(both.count)
    32
    >>> coherence_stats(lambda w, b: b['x'] @ w, jnp.ones(3),
    ...                 {'x': jnp.ones((4, 3))}, method='ghost')
    Traceback (most recent call last):
    ValueError: loss_fn: method='ghost' needs the model's layers, but found ...
  """
  ghost.check_ghost_args(loss_fn, method, ghost_form)
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  top_level = microbatch_size is None or microbatch_size >= size
  mesh_axes.check_axis_name(axis_name, batch)
  params = mesh_axes.as_varying(params, axis_name)

  if ghost.uses_ghost(loss_fn, method):
    def chunk_stats(chunk):
      out = ghost.scaled_sum_and_sq_norms(
          loss_fn, params, chunk, method=method, ghost_form=ghost_form,
          axis_name=axis_name, top_level=top_level)
      return CoherenceStats.from_sums(
          out.sum_grads, jax.tree.map(jnp.sum, out.sq_norms),
          _checks.batch_size(chunk), scale=out.scale)
  else:
    def chunk_stats(chunk):
      return CoherenceStats.from_grads(
          vmap_grads.vmapped_grads(loss_fn, params, chunk))

  init = mesh_axes.as_varying(CoherenceStats.zeros(params), axis_name)
  stats = microbatch.microbatched(
      lambda acc, chunk: acc.merge(chunk_stats(chunk)), batch,
      microbatch_size, combine='fold', init=init)
  if axis_name is not None:
    stats = stats.psum(axis_name)
  return stats
