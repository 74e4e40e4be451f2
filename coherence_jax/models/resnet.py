"""ResNet-18 with GroupNorm for CIFAR-shaped inputs (Flax NNX).

CIFAR stem (one 3x3 conv, stride 1, no max-pool), basic blocks [2, 2, 2, 2]
with 64/128/256/512 channels, GroupNorm (32 groups) instead of BatchNorm, so
per-example gradients and ghost norms are well defined without batch
statistics. Convs have no bias and use explicit (1, 1) padding, as PyTorch's
`nn.Conv2d(..., padding=1)`, so that a PyTorch twin with the same weights gives
the same outputs (stride-2 'SAME' would pad (0, 1) instead). NHWC inputs.
11,173,962 params with 10 classes.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

_PAD1 = ((1, 1), (1, 1))


def _conv3(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (3, 3), strides=stride, padding=_PAD1,
                  use_bias=False, rngs=rngs)


def _norm(channels: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
  """conv3x3-GN-ReLU-conv3x3-GN, plus identity or 1x1-conv-GN shortcut; ReLU."""

  def __init__(self, cin: int, cout: int, stride: int, groups: int, *,
               rngs: nnx.Rngs):
    self.conv1 = _conv3(cin, cout, stride, rngs)
    self.norm1 = _norm(cout, groups, rngs)
    self.conv2 = _conv3(cout, cout, 1, rngs)
    self.norm2 = _norm(cout, groups, rngs)
    if stride != 1 or cin != cout:
      self.shortcut_conv = nnx.Conv(cin, cout, (1, 1), strides=stride,
                                    padding='VALID', use_bias=False, rngs=rngs)
      self.shortcut_norm = _norm(cout, groups, rngs)
    else:
      self.shortcut_conv = None
      self.shortcut_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    if self.shortcut_conv is not None:
      x = self.shortcut_norm(self.shortcut_conv(x))
    return jax.nn.relu(x + y)


class ResNet18GN(nnx.Module):
  """ResNet-18, GroupNorm(32), CIFAR stem; 11,173,962 params (10 classes).

  `ResNet18GN(rngs=nnx.Rngs(0))(jnp.zeros((2, 32, 32, 3))).shape == (2, 10)`
  """

  def __init__(self, num_classes: int = 10, in_channels: int = 3,
               widths: Sequence[int] = (64, 128, 256, 512),
               blocks: Sequence[int] = (2, 2, 2, 2), groups: int = 32, *,
               rngs: nnx.Rngs):
    self.stem_conv = _conv3(in_channels, widths[0], 1, rngs)
    self.stem_norm = _norm(widths[0], groups, rngs)
    layers = []
    cin = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
      for i in range(count):
        stride = 2 if (stage > 0 and i == 0) else 1
        layers.append(BasicBlock(cin, width, stride, groups, rngs=rngs))
        cin = width
    self.blocks = nnx.List(layers)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem_norm(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x)
