"""CoherenceStats: streamable, mergeable running sums for gradient coherence.

For per-example gradients g_1..g_m only S = Σ g_i, Q = Σ ‖g_i‖² and m are kept:
  α_m = ‖S‖² / (m Q),   m-coherence = m α_m = ‖S‖² / Q   (1 = orthogonal, m = equal).
Partial sums from micro-batches, devices and hosts merge by addition.

α is scale-invariant, but float32 squares are not: ‖g‖² overflows for
‖g‖ ≳ 1e19 and underflows for ‖g‖ ≲ 1e-19. So Q is stored in units of
`scale²`, where `scale` is a power of two above the largest |entry| seen
(exact rescaling); merging brings both sides to the larger scale first. α,
m-coherence and the report then hold for gradients from 1e-30 to 1e30.
"""

import dataclasses
import functools
import math
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from coherence_jax import reductions
from coherence_jax._tree import PyTree
from coherence_jax._tree import path_str


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=['sum_grads', 'sum_sq_norms', 'count', 'scale'],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class CoherenceStats:
  """Running sums for coherence: S (params-shaped), Q per leaf, count m.

  Attributes:
    sum_grads: S = Σ g_i, params-shaped, float32.
    sum_sq_norms: per param leaf, Σ_i ‖g_i^leaf‖² / scale² (float32 scalars).
    count: m, the number of examples (int32).
    scale: a power of two; `sum_sq_norms` are in units of scale² (see the
      module docstring). `sq_norms()` gives Q per leaf in plain units.

  Conventions: with count 0 every ratio is nan; with count 1, `m_coherence()`
  is 1 (a gradient is fully aligned with itself; nan if it is zero) and
  `alpha_unbiased()` is nan (no pairs to average over). When the gradients sum
  to zero but are not all zero, m-coherence is 0 and gradient diversity inf.

  Example:
    >>> g = {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])}  # 3 examples
    >>> stats = CoherenceStats.from_grads(g)
    >>> round(float(stats.m_coherence()), 4)                 # ‖(2,2)‖² / 4
    2.0
    >>> round(float(stats.merge(stats).m_coherence()), 4)    # 6 examples
    4.0
  """
  sum_grads: PyTree
  sum_sq_norms: PyTree
  count: jax.Array
  scale: jax.Array

  @classmethod
  def zeros(cls, params: PyTree) -> 'CoherenceStats':
    """Empty statistics for a model with `params`."""
    return cls(
        sum_grads=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32),
                               params),
        sum_sq_norms=jax.tree.map(lambda p: jnp.zeros((), jnp.float32), params),
        count=jnp.zeros((), jnp.int32),
        scale=jnp.ones((), jnp.float32))

  @classmethod
  def from_grads(cls, grads: PyTree) -> 'CoherenceStats':
    """Statistics of per-example gradients with a leading example axis.

    Raises:
      ValueError: an empty pytree, a scalar leaf, or leaves whose leading
        (example) sizes differ.
    """
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    if not leaves:
      raise ValueError('grads: empty pytree; pass per-example gradients.')
    sizes = {path_str(p): (jnp.shape(g)[0] if jnp.ndim(g) else None)
             for p, g in leaves}
    if None in sizes.values() or len(set(sizes.values())) != 1:
      raise ValueError(
          f'grads: leading (example) sizes differ or are missing {sizes}; '
          'pass per-example gradients, every leaf [B, *param.shape].')
    grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
    scale = power_of_two_above(max_abs(grads))
    return cls(
        sum_grads=jax.tree.map(reductions.sum_over_examples, grads),
        sum_sq_norms=jax.tree.map(
            lambda g: reductions.total_sq_norm(g / scale), grads),
        count=jnp.asarray(next(iter(sizes.values())), jnp.int32),
        scale=scale)

  @classmethod
  def from_sums(cls, sum_grads: PyTree, sq_norms: PyTree,
                count) -> 'CoherenceStats':
    """Statistics from S and per-leaf Q in plain units (scale 1)."""
    return cls(
        sum_grads=jax.tree.map(lambda s: jnp.asarray(s, jnp.float32),
                               sum_grads),
        sum_sq_norms=jax.tree.map(lambda q: jnp.asarray(q, jnp.float32),
                                  sq_norms),
        count=jnp.asarray(count, jnp.int32),
        scale=jnp.ones((), jnp.float32))

  def rescaled(self, scale: jax.Array) -> 'CoherenceStats':
    """The same statistics with Q in units of `scale`² (scale >= self.scale)."""
    ratio = self.scale / scale
    return dataclasses.replace(
        self, sum_sq_norms=jax.tree.map(lambda q: q * ratio * ratio,
                                        self.sum_sq_norms), scale=scale)

  def merge(self, other: 'CoherenceStats') -> 'CoherenceStats':
    """Statistics of the union of both samples: every sum adds."""
    scale = jnp.maximum(self.scale, other.scale)
    a, b = self.rescaled(scale), other.rescaled(scale)
    return CoherenceStats(
        sum_grads=jax.tree.map(jnp.add, a.sum_grads, b.sum_grads),
        sum_sq_norms=jax.tree.map(jnp.add, a.sum_sq_norms, b.sum_sq_norms),
        count=a.count + b.count, scale=scale)

  def psum(self, axis_name) -> 'CoherenceStats':
    """Merges the statistics held on every device along `axis_name`."""
    scaled = self.rescaled(jax.lax.pmax(self.scale, axis_name))
    sums = jax.lax.psum((scaled.sum_grads, scaled.sum_sq_norms, scaled.count),
                        axis_name)
    return CoherenceStats(*sums, scale=scaled.scale)

  def sq_norms(self) -> PyTree:
    """Q per leaf, Σ_i ‖g_i^leaf‖², in plain units (may overflow float32)."""
    return jax.tree.map(lambda q: q * self.scale * self.scale,
                        self.sum_sq_norms)

  def sq_norm_of_sum(self) -> PyTree:
    """‖S_l‖² per leaf."""
    return jax.tree.map(reductions.total_sq_norm, self.sum_grads)

  def _totals(self):
    """(‖S‖², Q, m), both squares in units of scale²."""
    s2 = reductions.tree_sq_norm(
        jax.tree.map(lambda s: s / self.scale, self.sum_grads))
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
    s2, q, m = self._totals()
    return jnp.where(m > 0, q / s2, jnp.nan)

  def report(self) -> Dict[str, Any]:
    """Host-side summary in float64: whole network, per leaf, per module.

    Returns:
      A dict with 'count', 'alpha', 'm_coherence', 'alpha_unbiased',
      'gradient_diversity', and 'layers' / 'modules' mapping a '/'-joined path
      to {'alpha', 'm_coherence', 'share'} (share = Q_l / Q; α = Σ share·α_l).
      The numbers agree with the jitted methods (same conventions).
    """
    m = int(jax.device_get(self.count))
    scale = float(jax.device_get(self.scale))
    s_leaves = jax.tree_util.tree_leaves_with_path(self.sum_grads)
    q_leaves = jax.tree.leaves(self.sum_sq_norms)
    per_leaf = {}
    for (path, s), q in zip(s_leaves, q_leaves):
      s = np.asarray(jax.device_get(s), np.float64).ravel() / scale
      per_leaf[path_str(path)] = (float(s @ s), float(np.asarray(q)))
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


def max_abs(tree: PyTree) -> jax.Array:
  """max |entry| over every leaf (float32 scalar)."""
  return functools.reduce(
      jnp.maximum, [jnp.max(jnp.abs(x)) if jnp.size(x) else jnp.float32(0)
                    for x in jax.tree.leaves(tree)], jnp.float32(0))


def power_of_two_above(x: jax.Array) -> jax.Array:
  """The smallest power of two > x (1 for 0; non-finite x passes through)."""
  _, exponent = jnp.frexp(x)
  scale = jnp.ldexp(jnp.float32(1), exponent)
  return jnp.where(x > 0, jnp.where(jnp.isfinite(x), scale, x), 1.0).astype(
      jnp.float32)


def _divide(num: float, den: float) -> float:
  """num / den with IEEE conventions: x/0 = ±inf, 0/0 = nan."""
  if den:
    return num / den
  return math.copysign(math.inf, num) if num else math.nan


def coherence_numbers(s2: float, q: float, m: int) -> Dict[str, float]:
  """α, m-coherence, unbiased α and gradient diversity from ‖S‖², Q and m."""
  if m <= 0:
    return dict.fromkeys(('alpha', 'm_coherence', 'alpha_unbiased',
                          'gradient_diversity'), math.nan)
  m_coh = _divide(s2, q)
  return {
      'alpha': m_coh / m,
      'm_coherence': m_coh,
      'alpha_unbiased': (m_coh - 1.0) / (m - 1.0) if m > 1 else math.nan,
      'gradient_diversity': _divide(q, s2),
  }


def _entry(s2: float, q: float, q_total: float, m: int) -> Dict[str, float]:
  numbers = coherence_numbers(s2, q, m)
  return {'alpha': numbers['alpha'], 'm_coherence': numbers['m_coherence'],
          'share': _divide(q, q_total) if q_total else math.nan}
