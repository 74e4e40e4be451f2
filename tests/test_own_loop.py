"""value_and_grad (one backward pass) and the gradient noise scale.

value_and_grad is checked against `jax.value_and_grad` of the mean loss and
against `coherence_stats` (MLP, CNN, Transformer, a plain loss function;
eagerly, under jit, micro-batched, on 8 simulated devices with axis_name and
on an Explicit-sharded batch). The noise scale is checked against a linear
loss whose per-example gradients are μ + ε_i with known mean and covariance,
and against the identity B_simple = 1/α̂ − 1.

Tolerances. Every compared quantity is a float32 sum of at most B = 16
terms (or per-example values produced by the same ops) taken in another
order: the mean gradient as S / m against Σ_i (1/m) g_i from `jax.grad`,
the loss as Σ ℓ_i / m against `jnp.mean`. Reordering a float32 sum of n
terms changes it by at most ~n·2^-24·Σ|terms| ≈ 1e-6 Σ|terms| for n = 16;
relative to the largest entry of the gradient that is ~1e-6, so RTOL = 1e-5
with atol = RTOL × max|entry| holds on AVX2 and AVX-512 kernels alike
(measured: ≤ 2e-7 on these models; 1.2e-6 on the benchmark's 6-layer
Transformer, whose per-position sums are longer). The model's forward passes
(ghost hooks vs plain) differ only by kernel choice, within the same bound.
The sharded cases add a psum over 8 partial sums, within the same bound.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from coherence_jax import own_loop
from coherence_jax import stats as stats_lib
from coherence_jax.models import losses
from tests import helpers

RTOL = 1e-5
D = 8   # simulated devices (conftest)


def _close(got, want, rtol=RTOL):
  """Leaves equal to rtol, with atol = rtol × the largest |entry| of `want`.

  The absolute part is taken over the whole tree: a leaf whose gradient is
  zero in exact arithmetic (a Transformer's key bias: softmax ignores a
  shift) is a sum of terms of the other leaves' size cancelling to ~1e-9.
  """
  leaves = [np.asarray(y, np.float64) for y in jax.tree.leaves(want)]
  top = max(float(np.abs(y).max()) for y in leaves if y.size)
  for x, y in zip(jax.tree.leaves(got), leaves):
    np.testing.assert_allclose(np.asarray(x, np.float64), y, rtol=rtol,
                               atol=rtol * top)


def _reference(loss_fn, params, batch, method):
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p, b: jnp.mean(loss_fn(p, b))))(params, batch)
  return loss, grads, cj.coherence_stats(loss_fn, params, batch,
                                         method=method)


def _check(got, loss_fn, params, batch, method='auto'):
  """`got` against jax.value_and_grad and coherence_stats(method=method).

  The same method on both sides: ghost and vmap norms of a conv layer are
  sums over its positions in different orders (6.8e-5 apart measured on
  the CNN's Q); `tests/test_ghost.py` bounds that difference.
  """
  (loss, stats), grads = got
  want_loss, want_grads, want_stats = _reference(loss_fn, params, batch,
                                                 method)
  assert jax.tree.structure(grads) == jax.tree.structure(want_grads)
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
    assert g.dtype == p.dtype and g.shape == p.shape
  _close(loss, want_loss)
  _close(grads, want_grads)
  assert int(stats.count) == int(want_stats.count)
  _close(stats.sum_grads, want_stats.sum_grads)
  _close(stats.sq_norms(), want_stats.sq_norms())
  _close(stats.m_coherence(), want_stats.m_coherence())


def _cnn():
  model = nnx.jit(lambda: cj.models.CNN(num_classes=3, image_size=8,
                                        rngs=nnx.Rngs(0)))()
  loss_fn, params = cj.from_nnx(model, losses.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(3))
  batch = {'image': jax.random.normal(k1, (12, 8, 8, 1)),
           'label': jax.random.randint(k2, (12,), 0, 3)}
  return loss_fn, params, batch


def _transformer():
  model = nnx.jit(lambda: cj.models.Transformer(
      vocab_size=11, d_model=16, num_heads=2, num_layers=1, max_len=5,
      rngs=nnx.Rngs(0)))()
  loss_fn, params = cj.from_nnx(model, losses.next_token_loss)
  batch = {'tokens': jax.random.randint(jax.random.key(4), (10, 6), 0, 11)}
  return loss_fn, params, batch


def _linear():
  """A plain loss function (not from_nnx): the vmap path."""
  def loss_fn(params, batch):
    return 0.5 * (batch['x'] @ params['w'] + params['b'] - batch['y']) ** 2
  k1, k2 = jax.random.split(jax.random.key(5))
  params = {'w': jnp.linspace(-1., 1., 5), 'b': jnp.float32(0.3)}
  return loss_fn, params, {'x': jax.random.normal(k1, (13, 5)),
                           'y': jax.random.normal(k2, (13,))}


def test_mlp_eager_jit_and_microbatched():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(16)
  grad_fn = cj.value_and_grad(loss_fn)
  _check(grad_fn(params, batch), loss_fn, params, batch)
  _check(jax.jit(grad_fn)(params, batch), loss_fn, params, batch)
  # 16 = 5 + 5 + 5 + 1: a remainder chunk; grads accumulated over chunks.
  _check(cj.value_and_grad(loss_fn, microbatch_size=5)(params, batch),
         loss_fn, params, batch)


def test_plain_loss_function():
  loss_fn, params, batch = _linear()
  _check(cj.value_and_grad(loss_fn)(params, batch), loss_fn, params, batch)
  _check(jax.jit(cj.value_and_grad(loss_fn, microbatch_size=4))(
      params, batch), loss_fn, params, batch)


@pytest.mark.slow   # ~9 s of compiling on 2 cores; the MLP is the default case
def test_cnn():
  loss_fn, params, batch = _cnn()
  _check(jax.jit(cj.value_and_grad(loss_fn))(params, batch), loss_fn, params,
         batch)


@pytest.mark.slow   # ~20 s of compiling on 2 cores
def test_transformer():
  loss_fn, params, batch = _transformer()
  _check(jax.jit(cj.value_and_grad(loss_fn))(params, batch), loss_fn, params,
         batch)


@pytest.mark.slow
@pytest.mark.parametrize('make', [_cnn, _transformer])
def test_models_microbatched_and_vmap(make):
  loss_fn, params, batch = make()
  _check(cj.value_and_grad(loss_fn, microbatch_size=4)(params, batch),
         loss_fn, params, batch)
  _check(cj.value_and_grad(loss_fn, method='vmap')(params, batch), loss_fn,
         params, batch, method='vmap')


def test_eight_devices_with_axis_name_equal_one():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(2 * D)
  mesh = jax.make_mesh((D,), ('data',))
  grad_fn = cj.value_and_grad(loss_fn, axis_name='data', microbatch_size=1)

  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))

  @jax.jit
  def step(params, batch):
    return jax.shard_map(grad_fn, mesh=mesh, in_specs=(P(), P('data')),
                         out_specs=P())(params, batch)

  _check(step(params, sharded), loss_fn, params, batch)
  # A batch sharded over Explicit axes, no axis_name: run per device.
  _check(cj.value_and_grad(loss_fn)(params, sharded), loss_fn, params, batch)


def test_sharded_batch_without_axis_name_is_refused():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(2 * D)
  mesh = jax.make_mesh((D,), ('data',))
  run = jax.shard_map(cj.value_and_grad(loss_fn), mesh=mesh,
                      in_specs=(P(), P('data')), out_specs=P())
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  with pytest.raises(ValueError, match="Pass axis_name='data'"):
    run(params, sharded)


def test_bad_arguments_are_named_early():
  loss_fn, _ = helpers.tiny_mlp()
  with pytest.raises(ValueError, match='method'):
    cj.value_and_grad(loss_fn, method='fast')
  with pytest.raises(ValueError, match='microbatch_size'):
    cj.value_and_grad(loss_fn, microbatch_size=0)


def test_value_and_grad_stats_traceable_form():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(6)
  out = jax.eval_shape(lambda p, b: own_loop.value_and_grad_stats(
      loss_fn, p, b), params, batch)
  (loss, stats), grads = out
  assert loss.shape == () and stats.count.shape == ()
  assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(
      jnp.shape, params)


# ---- the gradient noise scale ---------------------------------------------

def _linear_gradients(m, mu, sigma, seed):
  """Per-example gradients of ℓ_i(w) = w·x_i, x_i = μ + σ ⊙ z_i (z ~ N(0, I)):
  g_i = x_i, mean μ, covariance diag(σ²)."""
  z = np.random.default_rng(seed).standard_normal((m, mu.size))
  x = (mu + sigma * z).astype(np.float32)
  loss_fn = lambda w, b: b['x'] @ w
  return loss_fn, x


def test_noise_scale_of_known_mean_and_covariance():
  mu = np.array([1.0, -2.0, 0.5, 0.0, 1.5])
  sigma = np.array([3.0, 1.0, 2.0, 4.0, 0.5])
  m = 4000
  loss_fn, x = _linear_gradients(m, mu, sigma, seed=0)
  (_, stats), grads = cj.value_and_grad(loss_fn)(jnp.zeros(5), {'x': x})
  np.testing.assert_allclose(grads, x.mean(0), rtol=1e-5, atol=1e-5)
  grad_sq, trace_cov = (float(v) for v in stats.noise_scale_parts())
  # The unbiased estimators, in float64 from the same sample: exact identities.
  x64 = x.astype(np.float64)
  s2, q = float(np.sum(x64.sum(0) ** 2)), float(np.sum(x64 ** 2))
  np.testing.assert_allclose(grad_sq, (s2 - q) / (m * (m - 1)), rtol=1e-4)
  np.testing.assert_allclose(trace_cov, x64.var(0, ddof=1).sum(), rtol=1e-4)
  # Against the population: tr Σ = Σσ², |G|² = |μ|², B_simple = 7.0.
  # Sampling error at m = 4000: sd(tr Σ̂)/tr Σ = sqrt(2 Σσ⁴)/(Σσ² sqrt(m))
  # ≈ 0.015; sd(|G|²̂) ≈ 2 sqrt(μᵀΣμ / m) ≈ 0.12 of 7.5: 5 sd ≈ 0.08 / 0.6.
  true_trace, true_g2 = float(np.sum(sigma ** 2)), float(mu @ mu)
  assert abs(trace_cov / true_trace - 1) < 0.08
  assert abs(grad_sq - true_g2) < 0.6
  got = float(stats.noise_scale())
  assert abs(got / (true_trace / true_g2) - 1) < 0.15
  # The identity with α̂ (both from the same float32 ‖S‖², Q).
  np.testing.assert_allclose(got, 1.0 / float(stats.alpha_unbiased()) - 1.0,
                             rtol=1e-4)
  report = stats.report()
  np.testing.assert_allclose(report['noise_scale'], got, rtol=1e-4)
  np.testing.assert_allclose(report['noise_scale'],
                             1.0 / report['alpha_unbiased'] - 1.0, rtol=1e-9)


def test_noise_scale_per_module_is_that_of_its_params():
  loss_fn, params = helpers.tiny_mlp()
  stats = cj.coherence_stats(loss_fn, params, helpers.tiny_batch(16))
  report = stats.report()
  for module, entry in report['modules'].items():
    i = int(module.split('/')[-1])
    only = stats_lib.CoherenceStats.from_sums(
        stats.sum_grads['layers'][i], stats.sq_norms()['layers'][i],
        stats.count)
    np.testing.assert_allclose(entry['noise_scale'],
                               float(only.noise_scale()), rtol=1e-4)


def test_noise_scale_undefined_cases_say_so():
  one = cj.CoherenceStats.from_grads({'w': jnp.ones((1, 2))})
  assert np.isnan(one.noise_scale()) and np.isnan(one.report()['noise_scale'])
  assert all(np.isnan(v) for v in one.noise_scale_parts())
  zero = cj.CoherenceStats.from_grads({'w': jnp.zeros((3, 2))})
  assert np.isnan(zero.noise_scale()) and np.isnan(
      zero.report()['noise_scale'])
  orthogonal = cj.CoherenceStats.from_grads({'w': jnp.eye(3)})   # c = 1
  assert np.isinf(orthogonal.noise_scale())
  assert np.isinf(orthogonal.report()['noise_scale'])
  opposed = cj.CoherenceStats.from_grads({'w': jnp.array([[1.], [-1.]])})
  assert np.isinf(opposed.noise_scale())   # c = 0 < 1
  equal = cj.CoherenceStats.from_grads({'w': jnp.ones((4, 3))})   # c = m
  assert float(equal.noise_scale()) == 0.0
  empty = cj.CoherenceStats.zeros({'w': jnp.ones(2)})
  assert np.isnan(empty.noise_scale()) and np.isnan(
      empty.report()['noise_scale'])


def test_ema_divides_the_averages_not_the_ratios():
  mu = np.array([0.3, 0.0]), np.array([1.0, 1.0])
  steps = [cj.CoherenceStats.from_grads(
      {'w': jnp.asarray(_linear_gradients(8, mu[0], mu[1], seed)[1])})
           for seed in range(20)]
  decay = 0.8
  ema = jax.jit(lambda e, s: e.update(s, decay))
  state = cj.NoiseScaleEMA.init()
  assert np.isnan(state.noise_scale())
  for s in steps:
    state = ema(state, s)
  parts = np.array([[float(v) for v in s.noise_scale_parts()] for s in steps])
  w = (1 - decay) * decay ** np.arange(len(steps))[::-1]
  want_g2, want_tr = (w[:, None] * parts).sum(0) / w.sum()
  np.testing.assert_allclose(state.grad_sq_estimate(), want_g2, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(state.trace_cov_estimate(), want_tr, rtol=1e-5)
  want = want_tr / want_g2 if want_g2 > 0 else np.inf
  np.testing.assert_allclose(state.noise_scale(), want, rtol=1e-4)
  # A step without an estimate (one example) leaves the averages unchanged.
  same = state.update(cj.CoherenceStats.from_grads({'w': jnp.ones((1, 2))}))
  assert jax.tree.map(float, same) == jax.tree.map(float, state)
  # Not positive averaged |G|²: inf, said so.
  neg = cj.NoiseScaleEMA.init().update(
      cj.CoherenceStats.from_grads({'w': jnp.array([[1.], [-1.]])}))
  assert np.isinf(neg.noise_scale())
  with pytest.raises(ValueError, match='decay'):
    state.update(steps[0], decay=1.0)


@pytest.mark.slow   # pmap compiles per device layout (~7 s)
def test_inside_pmap_with_axis_name_equals_one_device():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(2 * D)
  grad_fn = cj.value_and_grad(loss_fn, axis_name='data')
  per_device = jax.tree.map(lambda x: x.reshape((D, 2) + x.shape[1:]), batch)
  out = jax.pmap(grad_fn, axis_name='data', in_axes=(None, 0))(params,
                                                                per_device)
  first = jax.tree.map(lambda x: x[0], out)   # the same on every device
  _check(first, loss_fn, params, batch)
