"""VGG-11/13/16 (Flax NNX), with or without BatchNorm, as torchvision builds them.

3x3 convs with bias (padding 1), each followed by the norm (BatchNorm in the
'_bn' variants, GroupNorm or none by choice) and ReLU; 2x2 max-pools between
the stages (`pooling.max_pool`, whose gradient XLA fuses). Two heads:
'imagenet' (torchvision): adaptive average pool to 7x7, Dense 4096 - ReLU -
Dropout - Dense 4096 - ReLU - Dropout - Dense; and 'cifar' (the usual CIFAR
VGG): global average pool, one Dense. Parameter
counts at 224x224x3 / 1000 classes equal torchvision's: vgg11 132,863,336,
vgg13 133,047,848, vgg16 138,357,544; with BatchNorm 132,868,840,
133,053,736, 138,365,992. Dropout is off in inference mode (`from_nnx`).

Example (shapes only):
  >>> net = lambda x: VGG(10, depth=11, head='cifar', rngs=nnx.Rngs(0))(x)
  >>> jax.eval_shape(net, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)).shape
  (2, 10)
"""

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax.models.norms import apply_norm
from coherence_jax.models.norms import check_norm
from coherence_jax.models.norms import make_norm
from coherence_jax.models.pooling import max_pool

# torchvision's configurations: channels of each conv, 'M' a 2x2 max-pool.
CONFIGS = {
    11: (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    13: (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512,
         'M'),
    16: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
         512, 512, 512, 'M'),
}
HEADS = ('imagenet', 'cifar')


def adaptive_avg_pool(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """torch's AdaptiveAvgPool2d on NHWC x: output cell i averages rows
  floor(i·H/h) .. ceil((i+1)·H/h) (and likewise columns).

  Example:
    >>> adaptive_avg_pool(jnp.arange(4.0).reshape(1, 2, 2, 1), (1, 1))[0, 0, 0]
    Array([1.5], dtype=float32)
  """
  height, width = x.shape[1:3]
  out_h, out_w = size
  if (height, width) == (out_h, out_w):
    return x

  def bounds(n, m):
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]

  rows = [jnp.stack([jnp.mean(x[:, r0:r1, c0:c1], axis=(1, 2))
                     for c0, c1 in bounds(width, out_w)], axis=1)
          for r0, r1 in bounds(height, out_h)]
  return jnp.stack(rows, axis=1)


class ConvNorm(nnx.Module):
  """3x3 conv (bias, padding 1), the norm, ReLU."""

  def __init__(self, cin: int, cout: int, *, norm: Optional[str],
               groups: int, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)),
                         rngs=rngs)
    self.norm = make_norm(norm, cout, rngs=rngs, groups=groups)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(apply_norm(self.norm, self.conv(x)))


class VGG(nnx.Module):
  """VGG of depth 11, 13 or 16 (or any `config`), any norm, either head.

  Args:
    num_classes: output logits.
    in_channels: input channels.
    depth: 11, 13 or 16 (torchvision's configurations A, B, D).
    norm: None (plain VGG), 'batch' (the '_bn' models) or 'group'.
    head: 'imagenet' (7x7 adaptive pool, two Dense 4096 with dropout) or
      'cifar' (global average pool, one Dense). The input must survive the
      five max-pools: at least 32x32.
    dropout: the imagenet head's dropout rate (torchvision: 0.5).
    groups: GroupNorm groups.
    config: conv channels and 'M' pools, overriding `depth`.
    rngs: the `nnx.Rngs` for the initializers (and dropout).

  Raises:
    ValueError: unknown depth, head or norm.

  Example:
    >>> vgg = nnx.eval_shape(lambda: VGG(1000, depth=16, rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(vgg, nnx.Param)))
    138357544
  """

  def __init__(self, num_classes: int = 1000, in_channels: int = 3, *,
               depth: int = 16, norm: Optional[str] = None,
               head: str = 'imagenet', dropout: float = 0.5, groups: int = 32,
               config: Optional[Sequence] = None, rngs: nnx.Rngs):
    if config is None:
      if depth not in CONFIGS:
        raise ValueError(f'depth: got {depth!r}; pass one of '
                         f'{tuple(CONFIGS)}.')
      config = CONFIGS[depth]
    if head not in HEADS:
      raise ValueError(f'head: got {head!r}; pass one of {HEADS}.')
    check_norm(norm)
    layers, pool_after, cin = [], [], in_channels
    for entry in config:
      if entry == 'M':
        pool_after[-1] = True
        continue
      layers.append(ConvNorm(cin, entry, norm=norm, groups=groups, rngs=rngs))
      pool_after.append(False)
      cin = entry
    self.features = nnx.List(layers)
    self.pool_after = tuple(pool_after)
    self.head_kind = head
    if head == 'imagenet':
      self.fc1 = nnx.Linear(cin * 7 * 7, 4096, rngs=rngs)
      self.fc2 = nnx.Linear(4096, 4096, rngs=rngs)
      self.fc3 = nnx.Linear(4096, num_classes, rngs=rngs)
      self.dropout = nnx.Dropout(dropout, rngs=rngs)
    else:
      self.fc = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] of NHWC images x [B, H, W, in_channels]."""
    for layer, pool in zip(self.features, self.pool_after):
      x = layer(x)
      if pool:
        x = max_pool(x, (2, 2))
    if self.head_kind == 'cifar':
      return self.fc(jnp.mean(x, axis=(1, 2)))
    x = adaptive_avg_pool(x, (7, 7)).reshape((x.shape[0], -1))
    x = self.dropout(jax.nn.relu(self.fc1(x)))
    x = self.dropout(jax.nn.relu(self.fc2(x)))
    return self.fc3(x)
