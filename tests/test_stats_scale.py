"""CoherenceStats: scale invariance from 1e-30 to 1e30, bad input, conventions."""

import jax.numpy as jnp
import numpy as np
import pytest

import coherence_jax as cj
from coherence_jax import stats as stats_lib


def numpy_m_coherence(grads):
  g = np.asarray(grads, np.float64)
  s = g.sum(0)
  return float(s @ s / np.sum(g * g))


BASE = np.array([[1.0, 2.0, -1.0], [0.5, 1.5, 0.0], [2.0, 1.0, -0.5],
                 [1.0, 1.0, 1.0]], np.float32)


@pytest.mark.parametrize('scale', [1e-30, 1e-19, 1e-10, 1.0, 1e10, 1e20, 1e30])
def test_alpha_is_scale_invariant(scale):
  want = numpy_m_coherence(BASE)
  stats = cj.CoherenceStats.from_grads({'w': jnp.asarray(BASE * scale)})
  report = stats.report()
  # Rescaling by a power of two is exact; BASE * scale rounds each entry once
  # (EPS32); the rest is float32 sums of 4 values and of 12 squares: n·EPS32
  # <= 1.4e-6, so 1e-5 relative (the one cancelling column sum, -0.5, adds
  # 0.25 of the 50.75 in ‖S‖²).
  np.testing.assert_allclose(float(stats.m_coherence()), want, rtol=1e-5)
  np.testing.assert_allclose(float(stats.alpha()), want / 4, rtol=1e-5)
  np.testing.assert_allclose(report['m_coherence'], want, rtol=1e-5)
  np.testing.assert_allclose(report['gradient_diversity'], 1 / want, rtol=1e-5)


def test_merge_across_scales_equals_one_batch():
  big, small = BASE[:2] * 1e20, BASE[2:] * 1e18
  merged = cj.CoherenceStats.from_grads({'w': jnp.asarray(big)}).merge(
      cj.CoherenceStats.from_grads({'w': jnp.asarray(small)}))
  want = numpy_m_coherence(np.concatenate([big, small]).astype(np.float64))
  # Same float32 inputs; sums of 4 and 12 terms: <= 1.4e-6 relative.
  np.testing.assert_allclose(float(merged.m_coherence()), want, rtol=1e-5)
  assert int(merged.count) == 4


def test_antipodal_pair_report_agrees_with_methods():
  stats = cj.CoherenceStats.from_grads({'w': jnp.array([[1.0, 2.0],
                                                         [-1.0, -2.0]])})
  report = stats.report()
  # x + (-x) is exactly 0 in float32, in any order: exact equality is right.
  assert float(stats.m_coherence()) == report['m_coherence'] == 0.0
  assert np.isinf(float(stats.gradient_diversity()))
  assert np.isinf(report['gradient_diversity'])


def test_all_zero_gradients_are_nan_in_both():
  stats = cj.CoherenceStats.from_grads({'w': jnp.zeros((3, 2))})
  assert np.isnan(float(stats.m_coherence()))
  assert np.isnan(stats.report()['m_coherence'])


def test_from_grads_rejects_mismatched_leading_sizes():
  with pytest.raises(ValueError, match='grads: leading'):
    cj.CoherenceStats.from_grads({'a': jnp.ones((3, 2)), 'b': jnp.ones((5,))})


def test_from_grads_rejects_scalar_leaf():
  with pytest.raises(ValueError, match='grads'):
    cj.CoherenceStats.from_grads({'a': jnp.ones((3, 2)), 'b': jnp.float32(1)})


def test_power_of_two_above():
  # Powers of two and their log2 are exact: exact comparisons are right.
  for x in (1e-30, 0.3, 1.0, 3.0, 1e30):
    p = float(stats_lib.power_of_two_above(jnp.float32(x)))
    assert p > np.float32(x) and p / 2 <= np.float32(x)
    assert np.log2(p) == int(np.log2(p))
  assert float(stats_lib.power_of_two_above(jnp.float32(0))) == 1.0
