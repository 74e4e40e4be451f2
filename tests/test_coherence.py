"""CoherenceStats and coherence_stats against the identities of theory.md.

The linear loss ℓ_i(w) = x_i·w has per-example gradient exactly x_i, so
coherence of chosen vectors can be set up directly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import coherence_jax as cj
from tests import helpers

# Float32 rounding: a sum of n terms, in any order (any XLA:CPU kernel, AVX2
# or AVX-512, any batch or chunk size), is off by at most n·EPS32·Σ|terms|.
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
# m-coherence, α and Q here are ratios of float32 sums of <= ~300 terms (Q of
# a 50 x 6 batch): n·EPS32 <= 4e-5 per sum, ~1e-4 for a ratio of two sums
# computed twice in different orders. (Q of the tiny MLP's 12x8 kernel over 33
# examples sums 3168 squares: worst case 4e-4, but round-to-nearest errors of
# random values add like √n·EPS32 ≈ 7e-6.) A missing, extra or double-counted
# example moves these numbers by >= 1/50, far outside.
RTOL = 1e-4
linear_loss = lambda w, b: b['x'] @ w


def stats_of(vectors, **kwargs):
  x = jnp.asarray(vectors, jnp.float32)
  return cj.coherence_stats(linear_loss, jnp.zeros(x.shape[1]), {'x': x},
                            **kwargs)


def numpy_m_coherence(x):
  x = np.asarray(x, np.float64)
  return np.sum(x.sum(0) ** 2) / np.sum(x ** 2)


def test_matches_numpy_definition():
  x = np.random.default_rng(0).normal(size=(50, 6)) + 0.5
  stats = stats_of(x)
  np.testing.assert_allclose(stats.m_coherence(), numpy_m_coherence(x),
                             rtol=RTOL)
  np.testing.assert_allclose(stats.alpha(), numpy_m_coherence(x) / 50,
                             rtol=RTOL)
  np.testing.assert_allclose(stats.gradient_diversity(),
                             1 / numpy_m_coherence(x), rtol=RTOL)
  np.testing.assert_allclose(stats.alpha_unbiased(),
                             (numpy_m_coherence(x) - 1) / 49, rtol=RTOL)


def test_bounds_on_random_vectors():
  rng = np.random.default_rng(1)
  for shift in (0.0, 0.3, 3.0):
    alpha = float(stats_of(rng.normal(size=(40, 5)) + shift).alpha())
    # α <= 0.9 here, so the RTOL-sized rounding cannot cross a bound.
    assert 0.0 <= alpha <= 1.0


def test_identical_examples_give_m_and_alpha_one():
  # Dyadic values and scale 4: every sum is exact in float32 in any order.
  stats = stats_of(np.tile([[1.0, -2.0, 0.5]], (16, 1)))
  np.testing.assert_allclose(stats.m_coherence(), 16.0, rtol=RTOL)
  np.testing.assert_allclose(stats.alpha(), 1.0, rtol=RTOL)
  np.testing.assert_allclose(stats.alpha_unbiased(), 1.0, rtol=RTOL)


def test_orthogonal_examples_give_one():
  stats = stats_of(np.diag(np.arange(1.0, 9.0)))
  # Integers / 16 and their squares: exact in float32, so α_unbiased is 0
  # exactly; atol only because 0 has no relative tolerance.
  np.testing.assert_allclose(stats.m_coherence(), 1.0, rtol=RTOL)
  np.testing.assert_allclose(stats.alpha_unbiased(), 0.0, atol=1e-7)


def test_zero_mean_gives_zero():
  v = np.random.default_rng(2).normal(size=(10, 4))
  # S is 0 up to rounding of 20-term sums (<= 20·EPS32·Σ|v| ≈ 4e-5), so
  # α = ‖S‖²/(m Q) <= ~1e-11; a sign or pairing bug gives α ~ 0.1.
  np.testing.assert_allclose(stats_of(np.concatenate([v, -v])).alpha(), 0.0,
                             atol=1e-7)


@pytest.mark.parametrize('scale', [-3.0, 1e-3, 7.0])
def test_scale_invariance(scale):
  x = np.random.default_rng(3).normal(size=(30, 5)) + 1.0
  # scale * x rounds differently to float32 than x: a few EPS32, plus the
  # sums of 150 squares (RTOL above).
  np.testing.assert_allclose(stats_of(scale * x).alpha(), stats_of(x).alpha(),
                             rtol=RTOL)


def test_merge_is_associative_and_equals_whole():
  x = np.random.default_rng(4).normal(size=(30, 5)) + 0.2
  a, b, c = stats_of(x[:7]), stats_of(x[7:19]), stats_of(x[19:])
  left, right = a.merge(b).merge(c), a.merge(b.merge(c))
  whole = stats_of(x)
  # S_j sums 30 float32 terms, two orders; entries can cancel to near 0, so
  # the bound is absolute, in units of the terms: 2·30·EPS32·max_j Σ_i|x_ij|.
  s_atol = 2 * 30 * EPS32 * float(np.abs(np.float32(x)).sum(0).max())
  for s in (left, right):
    assert int(s.count) == 30
    np.testing.assert_allclose(s.alpha(), whole.alpha(), rtol=RTOL)
    np.testing.assert_allclose(s.sum_grads, whole.sum_grads, rtol=RTOL,
                               atol=s_atol)


# 4 (remainder 4 of 100) and 33 (remainder 1) run by default.
@pytest.mark.parametrize('microbatch_size', [
    pytest.param(1, marks=pytest.mark.slow), 4,
    pytest.param(7, marks=pytest.mark.slow), 33, 100])
def test_microbatch_invariance(microbatch_size):
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(33)
  whole = cj.coherence_stats(loss_fn, params, batch)
  chunked = cj.coherence_stats(loss_fn, params, batch,
                               microbatch_size=microbatch_size)
  assert int(chunked.count) == 33
  np.testing.assert_allclose(chunked.m_coherence(), whole.m_coherence(),
                             rtol=RTOL)
  # Q per leaf is a sum of squares (no cancellation): relative RTOL suffices.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL),
               chunked.sq_norms(), whole.sq_norms())


def test_network_stats_match_loop_of_grad():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(9)
  grads = helpers.loop_grads(loss_fn, params, batch)
  flat = np.concatenate([np.asarray(g).reshape(9, -1)
                         for g in jax.tree.leaves(grads)], axis=1)
  stats = cj.coherence_stats(loss_fn, params, batch, microbatch_size=4)
  # Q sums 9 x 131 squares (vmap in chunks of 4 vs batch-1 grads in float64):
  # ~√n·EPS32 ≈ 4e-6, worst case 1.4e-4; a wrong example would move it ~10%.
  np.testing.assert_allclose(stats.m_coherence(), numpy_m_coherence(flat),
                             rtol=1e-4)
  np.testing.assert_allclose(stats.report()['m_coherence'],
                             numpy_m_coherence(flat), rtol=1e-4)


def test_per_layer_decomposition_is_exact():
  loss_fn, params = helpers.tiny_mlp(widths=(12, 10, 8, 3))
  report = cj.coherence_stats(loss_fn, params, helpers.tiny_batch(20)).report()
  for level in ('layers', 'modules'):
    entries = report[level].values()
    # report() works in float64 on the same float32 sums: a few float64
    # roundings (~1e-15), so 1e-12 is loose yet catches any float32 step.
    np.testing.assert_allclose(sum(e['share'] for e in entries), 1.0,
                               rtol=1e-12)
    np.testing.assert_allclose(sum(e['share'] * e['alpha'] for e in entries),
                               report['alpha'], rtol=1e-12)
  assert set(report['layers']) == {f'layers/{i}/{n}' for i in range(3)
                                   for n in ('kernel', 'bias')}
  assert set(report['modules']) == {'layers/0', 'layers/1', 'layers/2'}


def test_count_zero_and_one_are_documented_values():
  empty = cj.CoherenceStats.zeros(jnp.zeros(3))
  assert np.isnan(empty.alpha()) and np.isnan(empty.m_coherence())
  assert np.isnan(empty.report()['alpha'])
  one = stats_of([[1.0, 2.0, 3.0]])
  # ‖S‖² and Q are the same float32 sum of the same squares: exactly 1.
  np.testing.assert_allclose(one.m_coherence(), 1.0, rtol=RTOL)
  assert np.isnan(one.alpha_unbiased())
  assert np.isnan(one.report()['alpha_unbiased'])


def population_alpha_of_mixture(rng, mean, sigma, num, k=1, p=1.0):
  """α of the mean of k draws of N(mean, σ²I), zeroed with probability 1 − p."""
  d = mean.shape[0]
  draws = mean + sigma * rng.normal(size=(num, k, d))
  w = draws.mean(1) * (rng.random((num, 1)) < p)
  return float(stats_of(w).alpha_unbiased())


def test_mini_batching_inflates_coherence_as_predicted():
  rng = np.random.default_rng(5)
  mean, sigma = np.full(20, 0.25), 1.0
  alpha = float(mean @ mean / (mean @ mean + 20 * sigma ** 2))  # = 1/17
  for k in (1, 4, 16):
    predicted = k * alpha / (1 + (k - 1) * alpha)
    measured = population_alpha_of_mixture(rng, mean, sigma, 40_000, k=k)
    # Monte Carlo standard error at 40k samples is < 1.5 % here; float32
    # rounding of the 40k-example sums (~√n·EPS32 ≈ 1e-4 relative) is
    # negligible next to it.
    np.testing.assert_allclose(measured, predicted, rtol=0.05)


def test_mixing_in_zero_vectors_scales_alpha_by_p():
  rng = np.random.default_rng(6)
  mean, sigma = np.full(20, 0.5), 1.0
  alpha = float(mean @ mean / (mean @ mean + 20 * sigma ** 2))
  for p in (0.25, 0.5):
    measured = population_alpha_of_mixture(rng, mean, sigma, 40_000, p=p)
    np.testing.assert_allclose(measured, p * alpha, rtol=0.05)


def test_stats_are_a_jittable_pytree():
  stats = stats_of(np.eye(3))
  doubled = jax.jit(lambda s: s.merge(s))(stats)
  assert int(doubled.count) == 6
  # Identity vectors, scale 2: dyadic, exact in float32.
  np.testing.assert_allclose(doubled.m_coherence(), 2.0, rtol=RTOL)


def test_per_leaf_sq_norm_of_sum_adds_up_to_the_total_in_alpha():
  rng = np.random.default_rng(3)
  x = {'a': rng.normal(size=(5, 4)), 'b': rng.normal(size=(5, 3, 2))}
  stats = cj.CoherenceStats.from_grads(
      jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), x))
  per_leaf = stats.sq_norm_of_sum()
  # S sums 5 terms (float32 copies of the float64 data) and ‖S‖² <= 6 squares:
  # worst-case bound for this data, cancellation included, <= 5e-6 relative.
  for name, v in x.items():
    np.testing.assert_allclose(per_leaf[name], np.sum(v.sum(0) ** 2),
                               rtol=RTOL)
  total = sum(float(v) for v in jax.tree.leaves(per_leaf))
  np.testing.assert_allclose(
      float(stats.m_coherence()) * sum(np.sum(v ** 2) for v in x.values()),
      total, rtol=RTOL)


def test_unknown_method_is_rejected():
  with pytest.raises(ValueError, match='method'):
    stats_of(np.eye(3), method='magic')
