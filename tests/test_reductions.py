"""reductions: example-axis sums and norms against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coherence_jax import reductions

# A float32 sum of n terms, in any order (any XLA:CPU kernel, AVX2 or AVX-512,
# any grouping), is within n·EPS32·Σ|terms| of the exact sum; the float64
# numpy references are exact by comparison.
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def _tree(seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  shapes = [(3,), (40, 7), (1000,), (), (5, 0)]
  return {f'leaf{i}': jax.random.normal(k, s) for i, (k, s) in
          enumerate(zip(keys, shapes))}


@pytest.mark.parametrize('group_floats', [1, 50, 300, 1 << 22])
def test_tree_sq_norm_matches_float64_sum_of_squares(group_floats):
  tree = _tree()
  want = sum(np.sum(np.asarray(v, np.float64) ** 2) for v in tree.values())
  got = reductions.tree_sq_norm(tree, group_floats=group_floats)
  assert got.dtype == jnp.float32
  # 1284 squares (each rounded once) summed in float32: the worst-case
  # bound n·EPS32 ≈ 1.5e-4 relative (all terms >= 0, so Σ|terms| = the sum).
  n = sum(np.size(v) for v in tree.values())
  rtol = n * EPS32
  # Still sharp: dropping any leaf (the smallest, the scalar, is 2.9e-4 of
  # the total) or a group would fail.
  shares = [np.sum(np.asarray(v, np.float64) ** 2) / want
            for v in tree.values() if np.size(v)]
  assert min(shares) > rtol
  np.testing.assert_allclose(float(got), want, rtol=rtol)


def test_tree_sq_norm_of_empty_tree_and_bfloat16_leaves():
  # Exact: an empty sum is 0, and 4 x 3² = 36 is a small integer (exact in
  # bfloat16 inputs and float32 sums, in any order).
  assert float(reductions.tree_sq_norm({})) == 0.0
  tree = {'a': jnp.full((4,), 3.0, jnp.bfloat16)}
  assert float(reductions.tree_sq_norm(tree)) == 36.0


def test_sums_and_per_example_norms_match_numpy():
  g = jax.random.normal(jax.random.key(1), (6, 4, 5))
  gn = np.asarray(g, np.float64)
  # Sums of 6 terms that can cancel to near 0: the bound is absolute,
  # 6·EPS32·Σ_i|g_i| (largest over entries).
  np.testing.assert_allclose(reductions.sum_over_examples(g), gn.sum(0),
                             rtol=0,
                             atol=6 * EPS32 * float(np.abs(gn).sum(0).max()))
  # Sums of 20 and of 120 squares (no cancellation): n·EPS32 relative.
  np.testing.assert_allclose(reductions.per_example_sq_norm(g),
                             (gn ** 2).sum((1, 2)), rtol=20 * EPS32)
  np.testing.assert_allclose(reductions.total_sq_norm(g), (gn ** 2).sum(),
                             rtol=120 * EPS32)
