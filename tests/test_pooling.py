"""models.pooling.max_pool against nnx.max_pool (select_and_scatter)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from coherence_jax.models.pooling import max_pool


def _reference(x, window):
  return nnx.max_pool(x, window_shape=window, strides=window)


SLOW = pytest.mark.slow  # the odd-size 2-D and the 1-D cases run by default


@pytest.mark.parametrize('shape,window', [
    pytest.param((3, 28, 28, 5), (2, 2), marks=SLOW),
    ((2, 15, 9, 4), (2, 2)),     # odd sizes: trailing row/column dropped
    pytest.param((2, 12, 12, 3), (3, 2), marks=SLOW),
    ((4, 10, 6), (2,)),          # 1-D
    pytest.param((2, 4, 6, 8, 3), (2, 3, 2), marks=SLOW),  # 3-D
])
def test_values_and_gradient_match_nnx_max_pool(shape, window):
  x = jax.random.normal(jax.random.key(0), shape)  # ties have probability 0
  cot = jax.random.normal(jax.random.key(1), _reference(x, window).shape)

  @jax.jit  # one compile per case; op-by-op dispatch is the slow part
  def values_and_grads(x, cot):
    out, vjp = jax.vjp(lambda v: max_pool(v, window), x)
    ref, ref_vjp = jax.vjp(lambda v: _reference(v, window), x)
    return out, ref, vjp(cot)[0], ref_vjp(cot)[0]

  out, ref, grad, want = values_and_grads(x, cot)
  # Exact equality is right here: a max selects an input (no arithmetic), and
  # with non-overlapping windows (strides = window) each input receives at
  # most one cotangent entry, copied, never summed.
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(grad, want)


def test_ties_split_the_cotangent_and_relu_hides_the_difference():
  x = jnp.array([[[[0.0], [0.0]], [[-1.0], [-2.0]]]])  # [1, 2, 2, 1]
  grad = jax.grad(lambda v: jnp.sum(max_pool(v, (2, 2))))(x)
  # 1/2 is exact in float32, as are relu gradients of 0 and 1.
  np.testing.assert_array_equal(grad[0, :, :, 0], [[0.5, 0.5], [0.0, 0.0]])
  relu_pool = lambda pool: jax.grad(
      lambda v: jnp.sum(pool(jax.nn.relu(v), (2, 2))))(x)
  np.testing.assert_array_equal(relu_pool(max_pool), relu_pool(_reference))


@pytest.mark.parametrize('window,match', [
    ((2,), 'one positive int per spatial'),
    ((2, 0), 'one positive int per spatial'),
    ((2.5, 2), 'one positive int per spatial'),
    (2, 'one positive int per spatial'),
    ((8, 2), 'larger than the spatial'),
])
def test_bad_window_is_a_clear_error(window, match):
  with pytest.raises(ValueError, match=match):
    max_pool(jnp.zeros((1, 4, 4, 1)), window)


def test_input_without_spatial_axes_is_a_clear_error():
  with pytest.raises(ValueError, match='at least one spatial axis'):
    max_pool(jnp.zeros((3, 4)), (2,))


def test_cnn_gradient_has_no_select_and_scatter():
  """The benchmark CNN pools with max_pool, whose gradient XLA fuses."""
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  loss_fn, params = cj.from_nnx(cj.models.CNN(rngs=nnx.Rngs(0)),
                                cj.models.cross_entropy_loss)
  batch = {'image': jnp.zeros((2, 28, 28, 1)), 'label': jnp.zeros((2,), int)}
  grad = jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))
  text = grad.lower(params, batch).as_text()
  assert 'reduce_window' not in text and 'select_and_scatter' not in text
