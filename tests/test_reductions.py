"""reductions: example-axis sums and norms against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coherence_jax import reductions


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
  np.testing.assert_allclose(float(got), want, rtol=2e-6)  # float32 sums


def test_tree_sq_norm_of_empty_tree_and_bfloat16_leaves():
  assert float(reductions.tree_sq_norm({})) == 0.0
  tree = {'a': jnp.full((4,), 3.0, jnp.bfloat16)}
  assert float(reductions.tree_sq_norm(tree)) == 36.0


def test_sums_and_per_example_norms_match_numpy():
  g = jax.random.normal(jax.random.key(1), (6, 4, 5))
  gn = np.asarray(g, np.float64)
  np.testing.assert_allclose(reductions.sum_over_examples(g), gn.sum(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(reductions.per_example_sq_norm(g),
                             (gn ** 2).sum((1, 2)), rtol=1e-5)
  np.testing.assert_allclose(reductions.total_sq_norm(g), (gn ** 2).sum(),
                             rtol=1e-5)
