"""ResNet-18-GN: size, output shape, torch twin, ghost α equals vmap α."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj

NUM_PARAMS = 11_173_962  # torchvision-style CIFAR ResNet-18, GN instead of BN


def _num_params(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


# Ghost (Gram forms, batched matmuls) and vmap compute the same per-example
# norms through different float32 reductions of up to millions of terms, where
# the worst-case n·EPS32 bound is vacuous. Round-to-nearest errors of such
# sums grow like √n·EPS32; the small GroupNorm scale/bias leaves are sums over
# 256 positions that cancel ~16x: √256·EPS32·16 ≈ 3e-5 of their Q. Measured
# on every leaf: <= 5e-6 with XLA:CPU's default and SSE4.2-only kernels, 2e-5
# with fast math and no fusion emitters. A missing example (of 4) or a 2x
# error is far outside.
RTOL = 1e-4
# Leaves whose gradient is 0 up to rounding would have Q at rounding level:
# floor at 1e-6 x the largest leaf's Q. (Here the smallest leaf is 1.5e-4 of
# the largest, so the floor is < 1% of it and hides no real error.)
ATOL_FRAC = 1e-6


def assert_method_matches_vmap(loss_fn, params, batch, method) -> int:
  """m-coherence and Q per leaf of `method` equal vmap's (RTOL); #leaves."""
  got = cj.coherence_stats(loss_fn, params, batch, method=method)
  want = cj.coherence_stats(loss_fn, params, batch, method='vmap')
  np.testing.assert_allclose(float(got.m_coherence()),
                             float(want.m_coherence()), rtol=RTOL)
  q_got = jax.tree.leaves(got.sq_norms())
  q_want = jax.tree.leaves(want.sq_norms())
  scale = max(float(q) for q in q_want)
  for a, b in zip(q_got, q_want):
    np.testing.assert_allclose(float(a), float(b), rtol=RTOL,
                               atol=ATOL_FRAC * scale)
  return len(q_got)


def test_param_count_and_output_shape():
  # Shapes only (nnx.eval_shape / jax.eval_shape): nothing is initialized.
  model = nnx.eval_shape(lambda: cj.models.ResNet18GN(rngs=nnx.Rngs(0)))
  assert _num_params(nnx.state(model, nnx.Param)) == NUM_PARAMS
  shape = jax.eval_shape(
      lambda x: cj.models.ResNet18GN(rngs=nnx.Rngs(0))(x),
      jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)).shape
  assert shape == (2, 10)


def test_param_count_equals_torch_twin():
  pytest.importorskip('torch')
  from benchmarks import bench_torch  # pylint: disable=g-import-not-at-top
  assert bench_torch.num_params(bench_torch.ResNet18GN()) == NUM_PARAMS
  assert bench_torch.num_params(bench_torch.CNN()) == 421_642


@pytest.mark.slow  # ~50 s: compiles ghost and vmap for a full ResNet-18
def test_ghost_equals_vmap_coherence():
  model = cj.models.ResNet18GN(rngs=nnx.Rngs(1))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.normal(k1, (4, 16, 16, 3)),
           'label': jax.random.randint(k2, (4,), 0, 10)}
  assert_method_matches_vmap(loss_fn, params, batch, 'ghost')


RESNET50_PARAMS = 25_557_032  # torchvision resnet50


def test_resnet50_param_count():
  model = nnx.eval_shape(lambda: cj.models.ResNet50(rngs=nnx.Rngs(0)))
  assert _num_params(nnx.state(model, nnx.Param)) == RESNET50_PARAMS


@pytest.mark.slow
def test_resnet50_output_shape_in_inference_mode():
  model = cj.models.ResNet50(rngs=nnx.Rngs(0))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  assert _num_params(params) == RESNET50_PARAMS
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  forward = jax.jit(lambda p, x: loss_fn.model(p)(x))
  logits = forward(params, x)
  assert logits.shape == (2, 1000)
  assert bool(jnp.all(jnp.isfinite(logits)))
  # BatchNorm uses running statistics: examples do not see each other. Batch 1
  # vs 2 may pick other XLA:CPU conv kernels: ~50 layers of float32 sums of up
  # to 4608 terms, ~1e-5 relative on activations (measured 7e-5 on a logit
  # near 0, 4% of this tolerance); the floor covers logits that cancel. Batch
  # coupling would change the logits at O(1).
  np.testing.assert_allclose(forward(params, x[:1]), logits[:1], rtol=1e-4,
                             atol=1e-5 * float(jnp.max(jnp.abs(logits))))


@pytest.mark.slow
def test_resnet50_auto_equals_vmap_coherence():
  model = cj.models.ResNet50(rngs=nnx.Rngs(1))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.normal(k1, (3, 32, 32, 3)),
           'label': jax.random.randint(k2, (3,), 0, 1000)}
  num_leaves = assert_method_matches_vmap(loss_fn, params, batch, 'auto')
  assert num_leaves == 161  # 53 convs, 53 BNs x 2, head x 2
