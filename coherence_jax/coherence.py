"""Gradient coherence (α, m-coherence) from streamable, mergeable running sums.

For per-example gradients g_1..g_m only S = Σ g_i, Q = Σ ‖g_i‖² and m are kept:
  α_m = ‖S‖² / (m Q),   m-coherence = m α_m = ‖S‖² / Q   (1 = orthogonal, m = equal).
Partial sums from micro-batches, devices and hosts merge by addition.
"""

import dataclasses
import functools
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from coherence_jax import batching
from coherence_jax import reductions

PyTree = Any
METHODS = ('vmap', 'ghost', 'auto')  # 'ghost'/'auto': see ghost.py.


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=['sum_grads', 'sum_sq_norms', 'count'],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class CoherenceStats:
  """Running sums for coherence: S (params-shaped), Q per leaf, count m.

  Conventions: with count 0 every ratio is nan; with count 1, `m_coherence()`
  is 1 (a gradient is fully aligned with itself; nan if it is zero) and
  `alpha_unbiased()` is nan (no pairs to average over).

  Example:
    >>> stats = coherence_stats(loss_fn, params, batch)
    >>> stats = stats.merge(coherence_stats(loss_fn, params, other_batch))
    >>> stats.m_coherence(), stats.report()['layers']['dense/kernel']
  """
  sum_grads: PyTree
  sum_sq_norms: PyTree
  count: jax.Array

  @classmethod
  def zeros(cls, params: PyTree) -> 'CoherenceStats':
    """Empty statistics for a model with `params`."""
    return cls(
        sum_grads=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32),
                               params),
        sum_sq_norms=jax.tree.map(lambda p: jnp.zeros((), jnp.float32), params),
        count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_grads(cls, grads: PyTree) -> 'CoherenceStats':
    """Statistics of per-example gradients with a leading example axis."""
    leaves = jax.tree.leaves(grads)
    if not leaves:
      raise ValueError('grads: empty pytree; pass per-example gradients.')
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    return cls(
        sum_grads=jax.tree.map(reductions.sum_over_examples, grads),
        sum_sq_norms=jax.tree.map(reductions.total_sq_norm, grads),
        count=jnp.asarray(leaves[0].shape[0], jnp.int32))

  def merge(self, other: 'CoherenceStats') -> 'CoherenceStats':
    """Statistics of the union of both samples: every sum adds."""
    return jax.tree.map(jnp.add, self, other)

  def psum(self, axis_name) -> 'CoherenceStats':
    """Merges the statistics held on every device along `axis_name`."""
    return jax.lax.psum(self, axis_name)

  def sq_norm_of_sum(self) -> PyTree:
    """‖S_l‖² per leaf."""
    return jax.tree.map(reductions.total_sq_norm, self.sum_grads)

  def _totals(self):
    s2 = reductions.tree_sq_norm(self.sum_grads)
    q = sum(jax.tree.leaves(self.sum_sq_norms))
    return s2, q, self.count.astype(jnp.float32)

  def alpha(self) -> jax.Array:
    """α_m = ‖S‖² / (m Q), in [0, 1]; nan when count is 0."""
    s2, q, m = self._totals()
    return jnp.where(m > 0, s2 / (m * q), jnp.nan)

  def m_coherence(self) -> jax.Array:
    """α_m / α⊥_m = ‖S‖² / Q, in [0, m]: how many examples one example's step helps."""
    s2, q, m = self._totals()
    return jnp.where(m > 0, s2 / q, jnp.nan)

  def alpha_unbiased(self) -> jax.Array:
    """(m α_m − 1)/(m − 1): α without the self terms; nan for count ≤ 1."""
    m = self.count.astype(jnp.float32)
    return jnp.where(m > 1, (self.m_coherence() - 1.0) / (m - 1.0), jnp.nan)

  def gradient_diversity(self) -> jax.Array:
    """Q / ‖S‖² = 1/(m α_m) (Yin et al. 2018); nan when count is 0."""
    return 1.0 / self.m_coherence()

  def report(self) -> Dict[str, Any]:
    """Host-side summary in float64: whole network, per leaf, per module.

    Returns a dict with 'count', 'alpha', 'm_coherence', 'alpha_unbiased',
    'gradient_diversity', and 'layers' / 'modules' mapping a '/'-joined path
    to {'alpha', 'm_coherence', 'share'} (share = Q_l / Q; α = Σ share·α_l).
    """
    m = int(jax.device_get(self.count))
    s_leaves = jax.tree_util.tree_leaves_with_path(self.sum_grads)
    q_leaves = jax.tree.leaves(self.sum_sq_norms)
    per_leaf = {}
    for (path, s), q in zip(s_leaves, q_leaves):
      s = np.asarray(jax.device_get(s), np.float64).ravel()
      per_leaf[path_to_str(path)] = (float(s @ s), float(np.asarray(q)))
    modules: Dict[str, list] = {}
    for name, (s2, q) in per_leaf.items():
      parent = name.rpartition('/')[0] or name
      acc = modules.setdefault(parent, [0.0, 0.0])
      acc[0] += s2
      acc[1] += q
    s2_total = sum(v[0] for v in per_leaf.values())
    q_total = sum(v[1] for v in per_leaf.values())
    out = coherence_numbers(s2_total, q_total, m)
    out['count'] = m
    out['layers'] = {k: _entry(s2, q, q_total, m)
                     for k, (s2, q) in per_leaf.items()}
    out['modules'] = {k: _entry(s2, q, q_total, m)
                      for k, (s2, q) in modules.items()}
    return out


def path_to_str(path) -> str:
  """'/'-joined names of a pytree key path: ('dense', 'kernel') -> 'dense/kernel'."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _ratio(num: float, den: float) -> float:
  return num / den if den else float('nan')


def coherence_numbers(s2: float, q: float, m: int) -> Dict[str, float]:
  """α, m-coherence, unbiased α and gradient diversity from ‖S‖², Q and m."""
  m_coh = _ratio(s2, q) if m > 0 else float('nan')
  return {
      'alpha': m_coh / m if m > 0 else float('nan'),
      'm_coherence': m_coh,
      'alpha_unbiased': (m_coh - 1.0) / (m - 1.0) if m > 1 else float('nan'),
      'gradient_diversity': _ratio(1.0, m_coh) if m > 0 else float('nan'),
  }


def _entry(s2: float, q: float, q_total: float, m: int) -> Dict[str, float]:
  numbers = coherence_numbers(s2, q, m)
  return {'alpha': numbers['alpha'], 'm_coherence': numbers['m_coherence'],
          'share': _ratio(q, q_total)}


def stats_unjitted(loss_fn, params, batch, microbatch_size=None,
                   axis_name=None) -> CoherenceStats:
  """Traceable body of `coherence_stats` (method='vmap')."""
  size = batching.check_per_example_loss(loss_fn, params, batch)
  batching.check_microbatch_size(microbatch_size)
  params = batching.as_varying(params, axis_name)
  grad_one = jax.vmap(jax.grad(batching.single_example_loss(loss_fn)),
                      in_axes=(None, 0))

  def chunk_stats(chunk):
    return CoherenceStats.from_grads(grad_one(params, chunk))

  return stream_stats(chunk_stats, params, batch, size, microbatch_size,
                      axis_name)


def stream_stats(chunk_stats, params, batch, size: int,
                 microbatch_size: Optional[int],
                 axis_name=None) -> CoherenceStats:
  """Merges `chunk_stats(chunk)` over micro-batches (scan + exact remainder).

  Only one micro-batch's intermediates are alive at a time. With `axis_name`
  the result is psum-ed over that mesh axis.
  """
  if microbatch_size is None or microbatch_size >= size:
    stats = chunk_stats(batch)
  else:
    chunks, tail = batching.split_microbatches(batch, microbatch_size, size)
    stats = batching.as_varying(CoherenceStats.zeros(params), axis_name)
    if chunks is not None:
      stats = jax.lax.scan(lambda acc, chunk: (acc.merge(chunk_stats(chunk)),
                                               None), stats, chunks)[0]
    if tail is not None:
      stats = stats.merge(chunk_stats(tail))
  if axis_name is not None:
    stats = stats.psum(axis_name)
  return stats


@functools.partial(jax.jit, static_argnames=('loss_fn', 'microbatch_size',
                                             'axis_name', 'method'))
def coherence_stats(loss_fn, params, batch, *,
                    microbatch_size: Optional[int] = None,
                    axis_name: Optional[str] = None,
                    method: str = 'auto') -> CoherenceStats:
  """Coherence statistics (S, Q per leaf, m) of the per-example gradients.

  Streams the batch `microbatch_size` examples at a time: at most one
  micro-batch of per-example gradients is alive. With `axis_name`, the sums
  are psum-ed over that mesh axis, so the same call works inside
  `jax.shard_map` (batch sharded, params replicated) and `jax.pmap`.

  Example:
    >>> loss_fn, params = from_nnx(MLP([784, 512, 10], rngs=nnx.Rngs(0)),
    ...                            cross_entropy_loss)
    >>> stats = coherence_stats(loss_fn, params, batch, microbatch_size=250)
    >>> float(stats.m_coherence())
  """
  if method not in METHODS:
    raise ValueError(f'method: got {method!r}; pass one of {METHODS}.')
  if method != 'vmap':
    from coherence_jax import ghost  # pylint: disable=g-import-not-at-top
    return ghost.stats_unjitted(loss_fn, params, batch, microbatch_size,
                                axis_name, method)
  return stats_unjitted(loss_fn, params, batch, microbatch_size, axis_name)
