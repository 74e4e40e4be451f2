"""per_example_grads / per_group_grads against a Python loop of jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import coherence_jax as cj
from tests import helpers

# vmap, microbatched, grouped and looped gradients run the same float32 math
# with different XLA:CPU kernels (batch sizes differ; AVX2 vs AVX-512 differ).
# Each entry of a tiny-MLP gradient is built from dot products of <= 12 terms
# over <= 3 layers: ~30·EPS32 ≈ 4e-6 of the magnitudes involved at worst.
RTOL = 1e-5
# Entries that cancel to near 0 lose their relative digits: absolute floor of
# ATOL_FRAC x the largest |entry| of the leaf (the size of the terms).
ATOL_FRAC = 1e-5


def assert_trees_close(a, b, magnitudes=None):
  """a ≈ b leaf by leaf; the floor is scaled by `magnitudes` (default b)."""
  def close(x, y, m):
    atol = ATOL_FRAC * float(np.max(np.abs(m), initial=0.0))
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=atol)
  jax.tree.map(close, a, b, b if magnitudes is None else magnitudes)


def test_matches_python_loop_of_grad():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(7)
  assert_trees_close(cj.per_example_grads(loss_fn, params, batch),
                     helpers.loop_grads(loss_fn, params, batch))


# 3 (a remainder) and 10 (one chunk) run by default.
@pytest.mark.parametrize('microbatch_size', [
    pytest.param(1, marks=pytest.mark.slow),
    pytest.param(2, marks=pytest.mark.slow), 3,
    pytest.param(7, marks=pytest.mark.slow), 10])
def test_microbatched_equals_unbatched(microbatch_size):
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(7)  # 3 and 2 do not divide 7
  full = cj.per_example_grads(loss_fn, params, batch)
  chunked = cj.per_example_grads(loss_fn, params, batch,
                                 microbatch_size=microbatch_size)
  assert jax.tree.leaves(chunked)[0].shape[0] == 7
  assert_trees_close(chunked, full)


def test_closed_form_linear_regression():
  # ℓ_i = (x_i·w − y_i)², ∇ℓ_i = 2 (x_i·w − y_i) x_i.
  x = jax.random.normal(jax.random.key(0), (9, 4))
  y = jax.random.normal(jax.random.key(1), (9,))
  w = jnp.arange(4.0)
  loss_fn = lambda w, b: (b['x'] @ w - b['y']) ** 2
  got = cj.per_example_grads(loss_fn, w, {'x': x, 'y': y}, microbatch_size=4)
  # The residual x·w − y (4 products and a difference) can cancel to near 0:
  # floor at RTOL x the largest of the same expression with |·| of every term.
  terms = 2 * (jnp.abs(x) @ jnp.abs(w) + jnp.abs(y))[:, None] * jnp.abs(x)
  np.testing.assert_allclose(got, 2 * (x @ w - y)[:, None] * x, rtol=RTOL,
                             atol=RTOL * float(jnp.max(terms)))


def test_per_group_grads_is_mean_of_group_members():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(12)
  groups = cj.per_group_grads(loss_fn, params, batch, 3)
  per_example = helpers.loop_grads(loss_fn, params, batch)
  expected = jax.tree.map(lambda g: g.reshape((3, 4) + g.shape[1:]).mean(1),
                          per_example)
  # Means of 4 gradients can cancel: the floor follows the members' size.
  assert_trees_close(groups, expected, magnitudes=per_example)


def test_one_group_is_the_batch_gradient():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(6)
  groups = cj.per_group_grads(loss_fn, params, batch, 1)
  batch_grad = jax.jit(jax.grad(lambda p: jnp.mean(loss_fn(p, batch))))(params)
  # A mean of 6 gradients, summed inside different matmuls: floor at the
  # size of the per-example terms.
  assert_trees_close(jax.tree.map(lambda g: g[0], groups), batch_grad,
                     magnitudes=cj.per_example_grads(loss_fn, params, batch))


def test_scalar_loss_is_rejected():
  _, params = helpers.tiny_mlp()
  loss_fn, _ = helpers.tiny_mlp()
  scalar_loss = lambda p, b: jnp.mean(loss_fn(p, b))
  with pytest.raises(ValueError, match=r'loss_fn: must return per-example'):
    cj.per_example_grads(scalar_loss, params, helpers.tiny_batch(4))


def test_mismatched_leading_sizes_are_rejected():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(4)
  batch['label'] = batch['label'][:3]
  with pytest.raises(ValueError, match=r'batch: leaves have different leading'):
    cj.per_example_grads(loss_fn, params, batch)


@pytest.mark.parametrize('bad', [0, -2, 1.5])
def test_bad_microbatch_size_is_rejected(bad):
  loss_fn, params = helpers.tiny_mlp()
  with pytest.raises(ValueError, match=r'microbatch_size: .*positive int'):
    cj.per_example_grads(loss_fn, params, helpers.tiny_batch(4),
                         microbatch_size=bad)


@pytest.mark.parametrize('bad', [0, 5, -1])
def test_num_groups_must_divide_batch(bad):
  loss_fn, params = helpers.tiny_mlp()
  with pytest.raises(ValueError, match=r'num_groups: .*divides the batch'):
    cj.per_group_grads(loss_fn, params, helpers.tiny_batch(12), bad)
