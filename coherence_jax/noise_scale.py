"""The gradient noise scale smoothed over steps: average |G|² and tr Σ, then divide.

One step's B_simple = tr Σ / |G|² (`CoherenceStats.noise_scale`) is a ratio of
two noisy estimates; once the m-coherence nears 1, |G|²'s estimate hovers
around 0 and the ratio jumps between huge, infinite and undefined values.
McCandlish et al. (2018) average numerator and denominator separately over
steps and divide the averages. `NoiseScaleEMA` does that with exponential
moving averages (bias-corrected like Adam's moments), as a pure pytree that
works on the host and inside `jax.jit` / `lax.scan`.

Example:
  >>> ema = NoiseScaleEMA.init()
  >>> g = {'w': jnp.array([[1., 0.], [0., 1.], [1., 1.]])}
  >>> for _ in range(3):
  ...   ema = ema.update(CoherenceStats.from_grads(g), decay=0.9)
  >>> round(float(ema.noise_scale()), 4)   # the same stats every step
  1.0
  >>> float(NoiseScaleEMA.init().noise_scale())   # nothing averaged yet
  nan
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from coherence_jax.stats import CoherenceStats


class NoiseScaleEMA(NamedTuple):
  """Exponential moving averages of |G|² and tr Σ (plain units).

  Attributes:
    grad_sq: decay-weighted sum of the steps' |G|² estimates.
    trace_cov: decay-weighted sum of the steps' tr Σ estimates.
    weight: the sum of the weights (for bias correction; 0 before the first
      step with an estimate).
  """
  grad_sq: jax.Array
  trace_cov: jax.Array
  weight: jax.Array

  @classmethod
  def init(cls) -> 'NoiseScaleEMA':
    """No step averaged yet (`noise_scale()` is nan)."""
    zero = jnp.zeros((), jnp.float32)
    return cls(zero, zero, zero)

  def update(self, stats: CoherenceStats, decay: float = 0.99
             ) -> 'NoiseScaleEMA':
    """The averages after one more step's statistics.

    Args:
      stats: the step's `CoherenceStats` (e.g. from `value_and_grad`).
      decay: weight of the past, in [0, 1); 0.99 averages ~100 steps.

    Returns:
      The new averages. A step whose estimates are not finite (count < 2,
      overflowing squares) leaves them unchanged: it carries no estimate.
    """
    if not 0.0 <= decay < 1.0:
      raise ValueError(f'decay: got {decay!r}; pass a number in [0, 1).')
    grad_sq, trace_cov = stats.noise_scale_parts()
    ok = jnp.isfinite(grad_sq) & jnp.isfinite(trace_cov)
    d = jnp.float32(decay)

    def mix(avg, x):
      return jnp.where(ok, d * avg + (1 - d) * jnp.where(ok, x, 0.0), avg)

    return NoiseScaleEMA(mix(self.grad_sq, grad_sq),
                         mix(self.trace_cov, trace_cov),
                         mix(self.weight, jnp.float32(1)))

  def noise_scale(self) -> jax.Array:
    """Smoothed B_simple = avg tr Σ / avg |G|².

    Returns:
      A float32 scalar: nan before any step with an estimate, inf while the
      averaged |G|² is not positive (the mean gradient is not resolved from
      noise yet), else >= 0.
    """
    # The bias corrections (division by `weight`) cancel in the ratio.
    return jnp.where(self.weight > 0,
                     jnp.where(self.grad_sq > 0,
                               self.trace_cov / jnp.where(
                                   self.grad_sq > 0, self.grad_sq, 1.0),
                               jnp.inf),
                     jnp.nan)

  def grad_sq_estimate(self) -> jax.Array:
    """The bias-corrected average |G|² (nan before any estimate)."""
    return jnp.where(self.weight > 0, self.grad_sq / jnp.where(
        self.weight > 0, self.weight, 1.0), jnp.nan)

  def trace_cov_estimate(self) -> jax.Array:
    """The bias-corrected average tr Σ (nan before any estimate)."""
    return jnp.where(self.weight > 0, self.trace_cov / jnp.where(
        self.weight > 0, self.weight, 1.0), jnp.nan)
