"""The benchmark CNN: two 3x3 conv + pool blocks, then two dense layers.

Example (shapes only; `nnx.eval_shape` allocates nothing):
  >>> cnn = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0)))
  >>> sum(p.size for p in jax.tree.leaves(nnx.state(cnn, nnx.Param)))
  421642
"""

import jax
from flax import nnx

from coherence_jax.models.pooling import max_pool


class CNN(nnx.Module):
  """Conv32-pool-Conv64-pool-Dense128-Dense10; 421,642 params on 28x28x1.

  Convs are 3x3 'SAME' with ReLU, each followed by a 2x2 max-pool
  (`pooling.max_pool`); every layer has a ghost rule.

  Args:
    num_classes: output logits.
    in_channels: input channels (1 for MNIST, 3 for CIFAR).
    image_size: input height = width; the flattened features are
      (image_size // 4)² x 64.
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: CNN(rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((4, 28, 28, 1), jnp.float32)).shape
    (4, 10)
    >>> jax.eval_shape(
    ...     lambda x: CNN(num_classes=100, in_channels=3, image_size=32,
    ...                   rngs=nnx.Rngs(0))(x),
    ...     jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)).shape
    (4, 100)
  """

  def __init__(self, num_classes: int = 10, in_channels: int = 1,
               image_size: int = 28, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_channels, 32, (3, 3), padding='SAME', rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), padding='SAME', rngs=rngs)
    flat = (image_size // 4) ** 2 * 64
    self.dense1 = nnx.Linear(flat, 128, rngs=rngs)
    self.dense2 = nnx.Linear(128, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] of NHWC images x [B, H, W, in_channels]."""
    x = max_pool(jax.nn.relu(self.conv1(x)), (2, 2))
    x = max_pool(jax.nn.relu(self.conv2(x)), (2, 2))
    x = x.reshape((x.shape[0], -1))
    return self.dense2(jax.nn.relu(self.dense1(x)))
