"""from_nnx adapts NNX models; a linen model works through the core API too."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import coherence_jax as cj
from tests import helpers


def test_cnn_has_the_documented_parameter_count():
  _, params = cj.from_nnx(cj.models.CNN(rngs=nnx.Rngs(0)),
                          cj.models.cross_entropy_loss)
  assert sum(x.size for x in jax.tree.leaves(params)) == 421_642


def test_params_are_a_plain_dict_with_readable_paths():
  _, params = helpers.tiny_mlp()
  assert set(params['layers'][0]) == {'kernel', 'bias'}
  assert isinstance(params['layers'][0]['kernel'], jax.Array)


class NormNet(nnx.Module):

  def __init__(self, rngs):
    self.dense = nnx.Linear(4, 6, rngs=rngs)
    self.norm = nnx.BatchNorm(6, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.out = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(self.norm(self.dense(x))))


def norm_loss(model, batch):
  return jnp.sum(model(batch['x']) ** 2, axis=-1)


def test_inference_mode_makes_examples_independent():
  model = NormNet(nnx.Rngs(0))
  loss_fn, params = cj.from_nnx(model, norm_loss)
  x = jax.random.normal(jax.random.key(0), (6, 4))
  loss = jax.jit(loss_fn)
  whole = loss(params, {'x': x})
  singles = jnp.stack([loss(params, {'x': x[i:i + 1]})[0] for i in range(6)])
  # No batch coupling. Batch-6 and batch-1 matmuls may use different XLA:CPU
  # kernels (AVX-512 vs AVX2 differ): each output is a sum of <= 6 products of
  # O(1) values, so float32 rounding leaves ~1e-6 absolute on a loss of O(1)
  # (1.6e-6 relative seen on a loss of 0.013 made by cancellation). Coupling
  # through batch statistics would change the losses at O(1).
  np.testing.assert_allclose(whole, singles, rtol=1e-5,
                             atol=1e-5 * float(jnp.max(jnp.abs(whole))))
  # Same program on the same inputs: bit-identical, so exact (dropout would
  # draw new masks and break it).
  np.testing.assert_allclose(whole, loss(params, {'x': x}), rtol=0)
  assert not model.norm.use_running_average  # the caller's model is untouched


def test_model_rebuilt_with_new_params_uses_them():
  loss_fn, params = helpers.tiny_mlp()
  zeroed = jax.tree.map(jnp.zeros_like, params)
  logits = loss_fn.model(zeroed)(jnp.ones((2, 12)))
  np.testing.assert_allclose(logits, 0.0)  # 0·x + 0 is exactly 0


def test_loss_fn_is_a_valid_static_jit_argument():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(4)
  first = cj.per_example_grads(loss_fn, params, batch)
  again = cj.per_example_grads(loss_fn, params, batch)
  # The same compiled program on the same inputs: bit-identical.
  jax.tree.map(np.testing.assert_array_equal, first, again)


def test_bad_model_is_rejected():
  with pytest.raises(ValueError, match='model: expected a flax.nnx.Module'):
    cj.from_nnx(lambda x: x, norm_loss)


class LinenMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))


@pytest.mark.slow  # ~6 s; linen via nnx.bridge
def test_linen_model_works_through_the_core_api():
  model = LinenMLP()
  batch = helpers.tiny_batch(10)
  params = model.init(jax.random.key(0), batch['image'])['params']

  def loss_fn(p, b):
    logits = model.apply({'params': p}, b['image'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, b['label'])

  grads = cj.per_example_grads(loss_fn, params, batch, microbatch_size=3)
  # Chunks of 3 vs batch-1 loop: different XLA:CPU kernels for dot products of
  # <= 12 terms, ~1e-6 relative; entries that cancel to near 0 get a floor of
  # 1e-5 x the leaf's largest |entry|.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b)))),
               grads, helpers.loop_grads(loss_fn, params, batch))
  report = cj.coherence_stats(loss_fn, params, batch).report()
  assert set(report['modules']) == {'Dense_0', 'Dense_1'}
