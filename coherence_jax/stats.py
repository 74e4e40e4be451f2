"""CoherenceStats: streamable, mergeable running sums for gradient coherence.

For per-example gradients g_1..g_m only S = Σ g_i, Q = Σ ‖g_i‖² and m are kept:
  α_m = ‖S‖² / (m Q),   m-coherence = m α_m = ‖S‖² / Q   (1 = orthogonal, m = equal).
Partial sums from micro-batches, devices and hosts merge by addition.

α is scale-invariant, but float32 squares are not: ‖g‖² overflows for
‖g‖ ≳ 1e19 and underflows for ‖g‖ ≲ 1e-19. So Q is stored in units of
`scale²`, where `scale` is a power of two above the largest |entry| seen
(exact rescaling); merging brings both sides to the larger scale first. Empty
statistics (and those of all-zero gradients) have scale 0, so they are an
exact identity of merge. α, m-coherence and the report then hold for
gradients from 1e-30 to 1e30.

Example (3 examples of a one-leaf model; S = (2, 2), Q = 1 + 1 + 2):
  >>> g = {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])}
  >>> stats = CoherenceStats.from_grads(g)
  >>> float(stats.m_coherence()), round(float(stats.alpha()), 4)
  (2.0, 0.6667)
  >>> tiny = CoherenceStats.from_grads({'w': 1e-30 * g['w']})
  >>> float(tiny.m_coherence())   # 1e-60 is no float32, yet the ratio holds
  2.0
"""

import dataclasses
import functools
import math
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from coherence_jax import reductions
from coherence_jax._tree import PyTree
from coherence_jax._tree import leaves_by_path
from coherence_jax._tree import path_str


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=['sum_grads', 'scaled_sq_norms', 'count',
                                'scale'],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class CoherenceStats:
  """Running sums for coherence: S (params-shaped), Q per leaf, count m.

  Attributes:
    sum_grads: S = Σ g_i, params-shaped, float32.
    scaled_sq_norms: per param leaf, Σ_i ‖g_i^leaf‖² / scale² (float32
      scalars): Q in units of scale², as the name says. Read Q itself, in
      plain units, with `sq_norms()`.
    count: m, the number of examples (int32).
    scale: a power of two; `scaled_sq_norms` are in units of scale² (see the
      module docstring). `sq_norms()` gives Q per leaf in plain units. 0 for
      statistics without a nonzero gradient (`zeros`, all-zero gradients):
      merge treats them as empty, whatever the other side's scale.

  Conventions: with count 0 every ratio is nan; with count 1, `m_coherence()`
  is 1 (a gradient is fully aligned with itself; nan if it is zero) and
  `alpha_unbiased()` is nan (no pairs to average over). When the gradients sum
  to zero but are not all zero, m-coherence is 0 and gradient diversity inf.

  A registered pytree (every field is data), so it can be returned from
  `jax.jit`, carried through `lax.scan` and stacked by `jax.vmap`. The ratio
  methods read one set of statistics: on statistics stacked by `jax.vmap`,
  call them inside the vmapped function (as in the `psum` example).

  Example:
    >>> g = {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])}  # 3 examples
    >>> stats = CoherenceStats.from_grads(g)
    >>> round(float(stats.m_coherence()), 4)                 # ‖(2,2)‖² / 4
    2.0
    >>> round(float(stats.merge(stats).m_coherence()), 4)    # 6 examples
    4.0
  """
  sum_grads: PyTree
  scaled_sq_norms: PyTree
  count: jax.Array
  scale: jax.Array

  @classmethod
  def zeros(cls, params: PyTree) -> 'CoherenceStats':
    """Empty statistics for a model with `params`.

    Args:
      params: the model's params (only their structure and shapes are used).

    Returns:
      Statistics of zero examples: S = 0, Q = 0, count 0, scale 0. An exact
      identity of `merge` at every scale: `zeros(p).merge(x)` equals `x`.

    Example:
      >>> empty = CoherenceStats.zeros({'w': jnp.ones((2, 3))})
      >>> int(empty.count), float(empty.alpha()), float(empty.scale)
      (0, nan, 0.0)
      >>> tiny = CoherenceStats.from_grads({'w': 1e-20 * jnp.ones((2, 2, 3))})
      >>> float(empty.merge(tiny).m_coherence())
      2.0
    """
    return cls(
        sum_grads=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32),
                               params),
        scaled_sq_norms=jax.tree.map(lambda p: jnp.zeros((), jnp.float32),
                                     params),
        count=jnp.zeros((), jnp.int32),
        scale=jnp.zeros((), jnp.float32))

  @classmethod
  def from_grads(cls, grads: PyTree) -> 'CoherenceStats':
    """Statistics of per-example gradients with a leading example axis.

    Args:
      grads: per-example gradients, a params-shaped pytree with every leaf
        [B, *param.shape] (e.g. from `per_example_grads`); cast to float32.

    Returns:
      The statistics of the B examples, Q in units of the power of two above
      the largest |entry| (scale 0 when every entry is 0).

    Raises:
      ValueError: an empty pytree, a scalar leaf, or leaves whose leading
        (example) sizes differ.

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> int(stats.count), stats.sum_grads['w']
      (3, Array([2., 2.], dtype=float32))
      >>> float(stats.scale), float(stats.scaled_sq_norms['w'])   # Q / scale²
      (2.0, 1.0)
      >>> float(stats.sq_norms()['w'])
      4.0
      >>> CoherenceStats.from_grads({'w': jnp.ones((3, 2)), 'b': jnp.ones(2)})
      Traceback (most recent call last):
      ValueError: grads: leading (example) sizes differ or are missing ...
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
    largest = max_abs(grads)
    unit = power_of_two_above(largest)
    return cls(
        sum_grads=jax.tree.map(reductions.sum_over_examples, grads),
        scaled_sq_norms=jax.tree.map(
            lambda g: reductions.total_sq_norm(g / unit), grads),
        count=jnp.asarray(next(iter(sizes.values())), jnp.int32),
        scale=jnp.where(largest == 0, jnp.float32(0), unit))

  @classmethod
  def from_sums(cls, sum_grads: PyTree, sq_norms: PyTree, count,
                scale=None) -> 'CoherenceStats':
    """Statistics from S and per-leaf Q.

    Args:
      sum_grads: S = Σ g_i, params-shaped, in plain units.
      sq_norms: per param leaf, Σ_i ‖g_i^leaf‖² (scalars): in plain units
        when `scale` is None, else in units of `scale`².
      count: m, the number of examples.
      scale: None (plain units, scale 1), or a power of two u (a positive
        float32 scalar, e.g. `power_of_two_above` of the largest |entry|;
        0 for statistics without a nonzero gradient): `sq_norms` are
        Σ_i ‖g_i^leaf / u‖², computed from rescaled gradients so that they
        neither overflow nor underflow float32. The statistics then merge
        with any others at any scale.

    Returns:
      The statistics, every field cast to float32 (count to int32); scale 0
      when every Q is 0 (no nonzero gradient: empty for `merge`).

    Raises:
      ValueError: a concrete `scale` that is negative, not finite, or not a
        power of two (a traced one is not checked).

    Example:
      >>> stats = CoherenceStats.from_sums(
      ...     {'w': jnp.array([2., 2.])}, {'w': 4.}, 3)
      >>> float(stats.m_coherence())
      2.0
      >>> tiny = CoherenceStats.from_sums(   # Q = 4e-60: no float32
      ...     {'w': jnp.array([2e-30, 2e-30])}, {'w': 4e-60 / 2.**-198}, 3,
      ...     scale=2.**-99)
      >>> round(float(tiny.m_coherence()), 4)
      2.0
    """
    if scale is None:
      scale = jnp.ones((), jnp.float32)
    else:
      _check_scale(scale)
      scale = jnp.asarray(scale, jnp.float32)
    sq_norms = jax.tree.map(lambda q: jnp.asarray(q, jnp.float32), sq_norms)
    # Q = 0: no nonzero gradient, so scale 0 (empty for merge, as from_grads).
    total = sum(jax.tree.leaves(sq_norms), jnp.float32(0))
    return cls(
        sum_grads=jax.tree.map(lambda s: jnp.asarray(s, jnp.float32),
                               sum_grads),
        scaled_sq_norms=sq_norms,
        count=jnp.asarray(count, jnp.int32),
        scale=jnp.where(total > 0, scale, jnp.float32(0)))

  def rescaled(self, scale: jax.Array) -> 'CoherenceStats':
    """The same statistics with Q in units of `scale`² (scale >= self.scale).

    Args:
      scale: the new unit; use a power of two for exact rescaling.

    Returns:
      Statistics with equal plain-unit values (`sq_norms()`, ratios).

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> wide = stats.rescaled(jnp.float32(4.))
      >>> float(wide.scaled_sq_norms['w']), float(wide.sq_norms()['w'])
      (0.25, 4.0)
    """
    # Equal scales (0 and 0 included) keep Q exactly; a smaller side's Q
    # shrinks by ratio², underflowing only where it is below float32 rounding
    # of the larger side's (whose Q / scale² is >= 1/4).
    ratio = jnp.where(self.scale == scale, jnp.float32(1),
                      self.scale / jnp.where(scale > 0, scale, 1))
    return dataclasses.replace(
        self, scaled_sq_norms=jax.tree.map(lambda q: q * ratio * ratio,
                                           self.scaled_sq_norms), scale=scale)

  def merge(self, other: 'CoherenceStats') -> 'CoherenceStats':
    """Statistics of the union of both samples: every sum adds.

    Both sides are first brought to the larger of the two scales.

    Args:
      other: statistics of the same params structure.

    Returns:
      The merged statistics (count = self.count + other.count).

    Raises:
      ValueError: `other` is no `CoherenceStats`, or a leaf is missing on one
        side or has another shape there (named by path).

    Example:
      >>> a = CoherenceStats.from_grads({'w': jnp.array([[1., 0.], [0., 1.]])})
      >>> b = CoherenceStats.from_grads({'w': jnp.array([[4., 4.]])})
      >>> both = a.merge(b)
      >>> int(both.count), round(float(both.m_coherence()), 4)  # 50 / 34
      (3, 1.4706)
      >>> float(CoherenceStats.zeros({'w': jnp.ones(2)}).merge(a).m_coherence())
      1.0
      >>> a.merge(CoherenceStats.zeros({'w': jnp.ones(3)}))
      Traceback (most recent call last):
      ValueError: CoherenceStats.merge: leaf 'w' has shape (2,) here and (3,) ...
    """
    _check_same_structure(self, other)
    scale = jnp.maximum(self.scale, other.scale)
    a, b = self.rescaled(scale), other.rescaled(scale)
    return CoherenceStats(
        sum_grads=jax.tree.map(jnp.add, a.sum_grads, b.sum_grads),
        scaled_sq_norms=jax.tree.map(jnp.add, a.scaled_sq_norms,
                                     b.scaled_sq_norms),
        count=a.count + b.count, scale=scale)

  def psum(self, axis_name) -> 'CoherenceStats':
    """Merges the statistics held on every device along `axis_name`.

    Call it inside `jax.shard_map`, `jax.pmap` or a named `jax.vmap`.

    Args:
      axis_name: the mapped axis (or tuple of axes) to merge over.

    Returns:
      The merged statistics, the same on every member of the axis.

    Example:
      >>> halves = {'w': jnp.array([[[1., 0.], [0., 1.]],
      ...                           [[1., 1.], [1., 1.]]])}
      >>> def merged(g):   # runs once per half, as on two devices
      ...   stats = CoherenceStats.from_grads(g).psum('i')
      ...   return stats.count, stats.m_coherence()
      >>> jax.jit(jax.vmap(merged, axis_name='i'))(halves)   # ‖(3, 3)‖² / 6
      (Array([4, 4], dtype=int32), Array([3., 3.], dtype=float32))
    """
    scaled = self.rescaled(jax.lax.pmax(self.scale, axis_name))
    sums = jax.lax.psum((scaled.sum_grads, scaled.scaled_sq_norms,
                         scaled.count),
                        axis_name)
    return CoherenceStats(*sums, scale=scaled.scale)

  def sq_norms(self) -> PyTree:
    """Q per leaf, Σ_i ‖g_i^leaf‖², in plain units (may overflow float32).

    Returns:
      A params-structured pytree of float32 scalars.

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> float(stats.sq_norms()['w'])
      4.0
    """
    return jax.tree.map(lambda q: q * self.scale * self.scale,
                        self.scaled_sq_norms)

  def sq_norm_of_sum(self) -> PyTree:
    """‖S_l‖² per leaf.

    Returns:
      A params-structured pytree of float32 scalars, in plain units.

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> float(stats.sq_norm_of_sum()['w'])
      8.0
    """
    return jax.tree.map(reductions.total_sq_norm, self.sum_grads)

  def _totals(self):
    """(‖S‖², Q, m), both squares in units of scale²."""
    if jnp.ndim(self.count) != 0:
      raise ValueError(
          f'CoherenceStats: count has shape {jnp.shape(self.count)}, so these '
          'are stacked statistics (e.g. returned by jax.vmap or pmap); compute '
          'the ratios inside the mapped function, or take one entry first '
          '(jax.tree.map(lambda x: x[i], stats)).')
    unit = jnp.where(self.scale > 0, self.scale, 1)   # scale 0: S = 0
    s2 = reductions.tree_sq_norm(
        jax.tree.map(lambda s: s / unit, self.sum_grads))
    q = sum(jax.tree.leaves(self.scaled_sq_norms))
    return s2, q, self.count.astype(jnp.float32)

  def alpha(self) -> jax.Array:
    """α_m = ‖S‖² / (m Q), in [0, 1]; nan when count is 0.

    Returns:
      A float32 scalar (1/m for orthogonal gradients, 1 for equal ones).

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> round(float(stats.alpha()), 4)   # 8 / (3 * 4)
      0.6667
    """
    s2, q, m = self._totals()
    return jnp.where(m > 0, s2 / (m * q), jnp.nan)

  def m_coherence(self) -> jax.Array:
    """α_m / α⊥_m = ‖S‖² / Q, in [0, m]: how many examples one example's step helps.

    Returns:
      A float32 scalar: 1 for orthogonal gradients, m for equal ones; nan
      when count is 0.

    Example:
      >>> orthogonal = CoherenceStats.from_grads({'w': jnp.eye(3)})
      >>> equal = CoherenceStats.from_grads({'w': jnp.ones((3, 2))})
      >>> float(orthogonal.m_coherence()), float(equal.m_coherence())
      (1.0, 3.0)
    """
    s2, q, m = self._totals()
    return jnp.where(m > 0, s2 / q, jnp.nan)

  def alpha_unbiased(self) -> jax.Array:
    """(m α_m − 1)/(m − 1): α without the self terms; nan for count ≤ 1.

    The mean of ⟨g_i, g_j⟩ over pairs i ≠ j, divided by the mean ‖g_i‖²:
    0 for orthogonal gradients, 1 for equal ones.

    Returns:
      A float32 scalar.

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> float(stats.alpha_unbiased())   # (2 - 1) / (3 - 1)
      0.5
    """
    m = self.count.astype(jnp.float32)
    return jnp.where(m > 1, (self.m_coherence() - 1.0) / (m - 1.0), jnp.nan)

  def gradient_diversity(self) -> jax.Array:
    """Q / ‖S‖² = 1/(m α_m) (Yin et al. 2018); nan when count is 0.

    Returns:
      A float32 scalar; inf when the gradients sum to zero.

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> float(stats.gradient_diversity())   # 4 / 8
      0.5
    """
    s2, q, m = self._totals()
    return jnp.where(m > 0, q / s2, jnp.nan)

  def noise_scale_parts(self) -> Tuple[jax.Array, jax.Array]:
    """(|G|², tr Σ): unbiased estimates behind the gradient noise scale.

    With c = ‖S‖²/Q (m-coherence), |G|² ≈ (‖S‖² − Q)/(m(m − 1)) estimates
    the squared norm of the true (expected) gradient and tr Σ ≈
    (Q − ‖S‖²/m)/(m − 1) the total variance of one example's gradient
    (McCandlish et al. 2018, appendix A, with B_small = 1, B_big = m). Average
    these over steps before dividing (`noise_scale.NoiseScaleEMA`).

    Returns:
      Two float32 scalars in plain units (squares of gradients: they
      overflow float32 for gradients above ~1e19); nan for count ≤ 1. |G|²
      is negative when c < 1 (the sample's mean gradient is smaller than
      its noise predicts).

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> [round(float(x), 4) for x in stats.noise_scale_parts()]  # 4/6, (4-8/3)/2
      [0.6667, 0.6667]
    """
    s2, q, m = self._totals()
    unit2 = self.scale * self.scale
    ok = m > 1
    den = jnp.where(ok, m - 1.0, 1.0)
    grad_sq = jnp.where(ok, (s2 - q) / (m * den) * unit2, jnp.nan)
    trace_cov = jnp.where(ok, jnp.maximum(q - s2 / m, 0.0) / den * unit2,
                          jnp.nan)
    return grad_sq, trace_cov

  def noise_scale(self) -> jax.Array:
    """Gradient noise scale B_simple = tr Σ / |G|² = (m − c)/(c − 1) = 1/α̂ − 1.

    The batch size at which the noise of a mini-batch gradient is as large as
    the gradient itself (McCandlish et al. 2018): steps with batches much
    smaller than it are noise-dominated, much larger ones waste examples.
    c = ‖S‖²/Q is the m-coherence: the noise scale falls as coherence rises
    (0 when every gradient is equal, c = m; m − 1 ... for c = 2).

    Returns:
      A float32 scalar; nan for count ≤ 1 or all-zero gradients (no
      estimate); inf when c ≤ 1 (the estimated |G|² is not positive: the
      mean gradient cannot be told from noise on this sample). A single
      step's value is noisy near c = 1: smooth |G|² and tr Σ over steps
      first (`noise_scale.NoiseScaleEMA`).

    Example:
      >>> stats = CoherenceStats.from_grads(
      ...     {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])})
      >>> float(stats.noise_scale()), 1 / float(stats.alpha_unbiased()) - 1
      (1.0, 1.0)
      >>> float(CoherenceStats.from_grads({'w': jnp.eye(3)}).noise_scale())
      inf
    """
    s2, q, m = self._totals()
    defined = (m > 1) & (q > 0)
    value = jnp.maximum(m * q - s2, 0.0) / jnp.where(s2 > q, s2 - q, 1.0)
    return jnp.where(defined, jnp.where(s2 > q, value, jnp.inf), jnp.nan)

  def report(self) -> Dict[str, Any]:
    """Host-side summary in float64: whole network, per leaf, per module.

    Returns:
      A dict with 'count', 'alpha', 'm_coherence', 'alpha_unbiased',
      'gradient_diversity', 'noise_scale', and 'layers' / 'modules' mapping a
      '/'-joined path to {'alpha', 'm_coherence', 'noise_scale', 'share'}
      (share = Q_l / Q; α = Σ share·α_l; a module's noise scale is that of
      its params' gradients alone).
      A module is a leaf's parent path (a top-level leaf is its own module).
      The numbers agree with the jitted methods (same conventions).

    Example:
      >>> g = {'dense': {'kernel': jnp.array([[1., 0.], [0., 1.]]),
      ...                'bias': jnp.array([[1.], [1.]])}}
      >>> r = CoherenceStats.from_grads(g).report()
      >>> r['count'], r['m_coherence'], r['alpha']   # ‖(1, 1, 2)‖² / 4
      (2, 1.5, 0.75)
      >>> r['layers']['dense/bias'], r['modules']['dense']['share']
      ({'alpha': 1.0, 'm_coherence': 2.0, 'noise_scale': 0.0, 'share': 0.5}, 1.0)
      >>> r['noise_scale']   # (m − c)/(c − 1) = 0.5 / 0.5
      1.0
    """
    m = int(jax.device_get(self.count))
    scale = float(jax.device_get(self.scale)) or 1.0   # scale 0: S = 0
    s_leaves = jax.tree_util.tree_leaves_with_path(self.sum_grads)
    q_leaves = jax.tree.leaves(self.scaled_sq_norms)
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


def _check_scale(scale) -> None:
  """A concrete `scale` must be 0 or a positive finite power of two."""
  if isinstance(scale, jax.core.Tracer):
    return
  value = np.asarray(scale, np.float64)
  if (value.shape != () or not np.isfinite(value) or value < 0
      or (value > 0 and np.frexp(value)[0] != 0.5)):
    raise ValueError(
        f'scale: got {scale!r}; pass a power of two (a float32 scalar, e.g. '
        'power_of_two_above(max |entry|)) in whose square units sq_norms are '
        'given, or None for plain units.')


def _check_same_structure(a, b) -> None:
  """Raises a ValueError naming the first leaf where `a` and `b` differ."""
  if not isinstance(b, CoherenceStats):
    raise ValueError(
        f'CoherenceStats.merge: other is a {type(b).__name__}, not '
        'CoherenceStats; build it with CoherenceStats.from_grads / from_sums '
        '/ zeros.')
  for field in ('sum_grads', 'scaled_sq_norms'):
    mine = leaves_by_path(getattr(a, field))
    theirs = leaves_by_path(getattr(b, field))
    for where, one, two in (('self', mine, theirs), ('other', theirs, mine)):
      for path in one:
        if path not in two:
          raise ValueError(
              f'CoherenceStats.merge: leaf {path_str(path)!r} is in {where} '
              f'but not in {"other" if where == "self" else "self"}; merge '
              'statistics of the same params (same pytree paths).')
    for path, leaf in mine.items():
      here, there = jnp.shape(leaf), jnp.shape(theirs[path])
      if here != there:
        raise ValueError(
            f'CoherenceStats.merge: leaf {path_str(path)!r} has shape {here} '
            f'here and {there} in other ({field}); merge statistics of the '
            'same params (same shapes).')
    kinds = jax.tree.structure(getattr(a, field)), jax.tree.structure(
        getattr(b, field))
    if kinds[0] != kinds[1]:
      raise ValueError(
          f'CoherenceStats.merge: the same leaf paths in other containers '
          f'({field}: {kinds[0]} here, {kinds[1]} in other); merge statistics '
          'built from the same params pytree.')
  for name in ('count', 'scale'):
    here, there = jnp.shape(getattr(a, name)), jnp.shape(getattr(b, name))
    if here != there:
      raise ValueError(
          f'CoherenceStats.merge: {name} has shape {here} here and {there} in '
          'other; stacked statistics (from jax.vmap / pmap) merge only with '
          'statistics stacked the same way.')


def max_abs(tree: PyTree) -> jax.Array:
  """max |entry| over every leaf (float32 scalar).

  Args:
    tree: a pytree of arrays (empty leaves count as 0).

  Returns:
    A float32 scalar; 0 for a tree without entries.

  Example:
    >>> float(max_abs({'a': jnp.array([-3., 1.]), 'b': jnp.zeros((0,))}))
    3.0
  """
  return functools.reduce(
      jnp.maximum, [jnp.max(jnp.abs(x)) if jnp.size(x) else jnp.float32(0)
                    for x in jax.tree.leaves(tree)], jnp.float32(0))


def power_of_two_above(x: jax.Array) -> jax.Array:
  """The smallest power of two > x (1 for 0; non-finite x passes through).

  Args:
    x: a non-negative float scalar (e.g. `max_abs` of gradients).

  Returns:
    A float32 scalar.

  Example:
    >>> [float(power_of_two_above(jnp.float32(x)))
    ...  for x in (0., 0.3, 1., 3., 4.)]
    [1.0, 0.5, 2.0, 4.0, 8.0]
  """
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
  """α, m-coherence, unbiased α and gradient diversity from ‖S‖², Q and m.

  Host-side (Python floats), with the conventions of `CoherenceStats`.

  Args:
    s2: ‖S‖².
    q: Q = Σ_i ‖g_i‖².
    m: the number of examples.

  Returns:
    A dict with 'alpha', 'm_coherence', 'alpha_unbiased',
    'gradient_diversity' and 'noise_scale' (all nan when m <= 0; see
    `noise_scale_of`).

  Example:
    >>> coherence_numbers(8., 4., 3)   # doctest: +NORMALIZE_WHITESPACE
    {'alpha': 0.6666666666666666, 'm_coherence': 2.0, 'alpha_unbiased': 0.5,
     'gradient_diversity': 0.5, 'noise_scale': 1.0}
  """
  if m <= 0:
    return dict.fromkeys(('alpha', 'm_coherence', 'alpha_unbiased',
                          'gradient_diversity', 'noise_scale'), math.nan)
  m_coh = _divide(s2, q)
  return {
      'alpha': m_coh / m,
      'm_coherence': m_coh,
      'alpha_unbiased': (m_coh - 1.0) / (m - 1.0) if m > 1 else math.nan,
      'gradient_diversity': _divide(q, s2),
      'noise_scale': noise_scale_of(s2, q, m),
  }


def noise_scale_of(s2: float, q: float, m: int) -> float:
  """B_simple = (m Q − ‖S‖²)/(‖S‖² − Q), host-side, as `CoherenceStats.noise_scale`.

  Args:
    s2: ‖S‖².
    q: Q = Σ_i ‖g_i‖².
    m: the number of examples.

  Returns:
    nan for m <= 1 or q <= 0 (no estimate), inf for ‖S‖² <= Q (m-coherence
    <= 1: the estimated squared mean gradient is not positive), else >= 0.

  Example:
    >>> noise_scale_of(8., 4., 3), noise_scale_of(3., 3., 3), noise_scale_of(1., 1., 1)
    (1.0, inf, nan)
  """
  if m <= 1 or not q > 0:
    return math.nan
  if not s2 > q:
    return math.inf
  return max(m * q - s2, 0.0) / (s2 - q)


def _entry(s2: float, q: float, q_total: float, m: int) -> Dict[str, float]:
  numbers = coherence_numbers(s2, q, m)
  return {'alpha': numbers['alpha'], 'm_coherence': numbers['m_coherence'],
          'noise_scale': numbers['noise_scale'],
          'share': _divide(q, q_total) if q_total else math.nan}
