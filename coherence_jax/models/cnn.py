"""The benchmark CNN: two 3x3 conv + pool blocks, then two dense layers."""

import jax
from flax import nnx

from coherence_jax.models.pooling import max_pool


class CNN(nnx.Module):
  """Conv32-pool-Conv64-pool-Dense128-Dense10; 421,642 params on 28x28x1.

  `CNN(rngs=nnx.Rngs(0))(jnp.zeros((4, 28, 28, 1))).shape == (4, 10)`
  """

  def __init__(self, num_classes: int = 10, in_channels: int = 1,
               image_size: int = 28, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_channels, 32, (3, 3), padding='SAME', rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), padding='SAME', rngs=rngs)
    flat = (image_size // 4) ** 2 * 64
    self.dense1 = nnx.Linear(flat, 128, rngs=rngs)
    self.dense2 = nnx.Linear(128, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = max_pool(jax.nn.relu(self.conv1(x)), (2, 2))
    x = max_pool(jax.nn.relu(self.conv2(x)), (2, 2))
    x = x.reshape((x.shape[0], -1))
    return self.dense2(jax.nn.relu(self.dense1(x)))
