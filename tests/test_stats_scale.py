"""CoherenceStats: scale invariance from 1e-30 to 1e30, bad input, conventions."""

import hypothesis
from hypothesis import strategies as st
import jax
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


# --------------------------------------------------------- merge identity

SCALES = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e19, 1e30]


@pytest.mark.parametrize('scale', SCALES)
def test_zeros_is_an_exact_identity_of_merge(scale):
  # Before: zeros() had scale 1 and merge moved x (scale 2**-66 at 1e-20) to
  # it, so Q / 1 underflowed and m-coherence was nan.
  x = cj.CoherenceStats.from_grads({'w': jnp.asarray(BASE * scale)})
  empty = cj.CoherenceStats.zeros({'w': jnp.zeros(3)})
  for merged in (empty.merge(x), x.merge(empty), empty.merge(empty).merge(x)):
    # Adding exact zeros and multiplying by 1 are exact: == is right.
    assert float(merged.scale) == float(x.scale)
    assert float(merged.scaled_sq_norms['w']) == float(x.scaled_sq_norms['w'])
    np.testing.assert_array_equal(merged.sum_grads['w'], x.sum_grads['w'])
    assert int(merged.count) == 4
    assert float(merged.m_coherence()) == float(x.m_coherence())


def test_all_zero_gradients_merge_with_tiny_ones():
  # A micro-batch whose examples are all fitted (zero gradients) must not
  # impose scale 1 on the tiny gradients it is merged with.
  tiny = cj.CoherenceStats.from_grads({'w': jnp.asarray(BASE * 1e-30)})
  zero = cj.CoherenceStats.from_grads({'w': jnp.zeros((2, 3))})
  merged = zero.merge(tiny)
  assert int(merged.count) == 6
  # Same float32 sums as `tiny` plus exact zeros: exact.
  assert float(merged.m_coherence()) == float(tiny.m_coherence())
  assert np.isnan(float(zero.m_coherence()))   # the documented convention


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(e1=st.integers(-30, 30), e2=st.integers(-30, 30),
                  split=st.integers(1, 3))
def test_merge_of_any_two_scales(e1, e2, split):
  a = BASE[:split].astype(np.float64) * 10.0 ** e1
  b = BASE[split:].astype(np.float64) * 10.0 ** e2
  want = numpy_m_coherence(np.concatenate([a, b]))
  stats = [cj.CoherenceStats.from_grads({'w': jnp.asarray(x, jnp.float32)})
           for x in (a, b)]
  merged = stats[0].merge(stats[1])
  empty = cj.CoherenceStats.zeros({'w': jnp.zeros(3)})
  folded = empty.merge(stats[0]).merge(stats[1])
  # Rounding each entry to float32 (EPS32 = 6e-8 relative) and float32 sums
  # of <= 4 values and <= 12 squares, rescaled by exact powers of two: a few
  # EPS32, ≤ 1.4e-6 relative; when one side is >= 2**64 times smaller its Q
  # underflows to 0, which changes the answer by < 12 * 2**-128 relative.
  # (The one cancelling column sum of BASE costs no more than 0.25/50.75.)
  for got in (merged, folded, stats[1].merge(stats[0])):
    assert int(got.count) == 4
    np.testing.assert_allclose(float(got.m_coherence()), want, rtol=1e-5)
    np.testing.assert_allclose(got.report()['m_coherence'], want, rtol=1e-5)


@pytest.mark.parametrize('scale', SCALES)
def test_psum_of_tiny_and_huge_and_empty(scale):
  halves = np.stack([BASE[:2] * scale, BASE[2:] * 1e-30 * scale])
  halves = np.concatenate([halves, np.zeros_like(halves)])   # 2 idle devices

  def merged(g, empty):
    stats = cj.CoherenceStats.from_grads({'w': g})
    stats = jax.lax.cond(empty, lambda: cj.CoherenceStats.zeros(
        {'w': jnp.zeros(3)}), lambda: stats).psum('i')
    return stats.count, stats.m_coherence()

  count, m_coh = jax.jit(jax.vmap(merged, axis_name='i'))(
      jnp.asarray(halves, jnp.float32), jnp.array([False, False, True, True]))
  # The second half is 1e-30 times smaller: its part of S and Q is far below
  # float32 rounding of the first half's (bounds as above).
  want = numpy_m_coherence(BASE[:2])
  np.testing.assert_array_equal(count, [4] * 4)
  np.testing.assert_allclose(np.asarray(m_coh), want, rtol=1e-5)


@pytest.mark.parametrize('scale', SCALES)
def test_from_sums_with_a_scale_merges_with_from_grads(scale):
  g = BASE * scale
  exact = cj.CoherenceStats.from_grads({'w': jnp.asarray(g)})
  unit = np.float32(2.0 ** np.ceil(np.log2(np.max(np.abs(g)) + 1e-300)))
  q = np.sum((BASE.astype(np.float64) * scale / unit) ** 2)
  summed = cj.CoherenceStats.from_sums({'w': jnp.asarray(g.sum(0))},
                                       {'w': q}, 4, scale=unit)
  want = numpy_m_coherence(BASE)
  empty = cj.CoherenceStats.zeros({'w': jnp.zeros(3)})
  # Merged with itself (the same 4 examples twice), ‖S‖² quadruples and Q
  # doubles: twice the m-coherence. float32 inputs and sums of 4 values / 12
  # squares: as above.
  for got, factor in ((summed, 1), (empty.merge(summed), 1),
                      (summed.merge(exact), 2), (exact.merge(summed), 2)):
    np.testing.assert_allclose(float(got.m_coherence()), factor * want,
                               rtol=1e-5)
  assert int(summed.merge(exact).count) == 8


@pytest.mark.parametrize('scale', [None, 1.0, 2.0 ** 10])
def test_from_sums_of_zero_gradients_merge_with_tiny_ones(scale):
  # A ghost chunk whose examples all have zero gradients (Q = 0) must not
  # impose its unit on tiny statistics, whatever unit it was given in.
  tiny = cj.CoherenceStats.from_grads({'w': jnp.asarray(BASE * 1e-30)})
  zero = cj.CoherenceStats.from_sums({'w': jnp.zeros(3)}, {'w': 0.0}, 2,
                                     scale=scale)
  for merged in (zero.merge(tiny), tiny.merge(zero)):
    assert int(merged.count) == 6
    # Exact zeros added: exact.
    assert float(merged.m_coherence()) == float(tiny.m_coherence())


def test_from_sums_rejects_a_scale_that_is_no_power_of_two():
  with pytest.raises(ValueError, match='scale: got 3.0'):
    cj.CoherenceStats.from_sums({'w': jnp.ones(2)}, {'w': 1.0}, 2, scale=3.0)


# ---------------------------------------------------- merge checks shapes


def test_merge_names_a_leaf_of_another_shape():
  # Before: w (3,) with w (1,) broadcast: count 5, m-coherence 5.4.
  a = cj.CoherenceStats.from_grads({'w': jnp.ones((3, 3))})
  b = cj.CoherenceStats.from_grads({'w': jnp.ones((2, 1))})
  with pytest.raises(ValueError, match=r"merge: leaf 'w' has shape \(3,\) "
                     r'here and \(1,\) in other'):
    a.merge(b)


def test_merge_names_a_missing_leaf():
  a = cj.CoherenceStats.from_grads({'w': jnp.ones((3, 3)), 'b': jnp.ones((3,
                                                                          2))})
  b = cj.CoherenceStats.from_grads({'w': jnp.ones((2, 3))})
  with pytest.raises(ValueError, match=r"merge: leaf 'b' is in self but not "
                     'in other'):
    a.merge(b)
  with pytest.raises(ValueError, match=r"merge: leaf 'b' is in other but not "
                     'in self'):
    b.merge(a)


def test_merge_rejects_what_is_no_stats():
  a = cj.CoherenceStats.from_grads({'w': jnp.ones((3, 3))})
  with pytest.raises(ValueError, match='merge: other is a dict'):
    a.merge({'w': jnp.ones(3)})
