"""ResNet-18-GN for CIFAR-shaped inputs and ResNet-50 for ImageNet (Flax NNX).

ResNet18GN:

CIFAR stem (one 3x3 conv, stride 1, no max-pool), basic blocks [2, 2, 2, 2]
with 64/128/256/512 channels, GroupNorm (32 groups) instead of BatchNorm, so
per-example gradients and ghost norms are well defined without batch
statistics. Convs have no bias and use explicit (1, 1) padding, as PyTorch's
`nn.Conv2d(..., padding=1)`, so that a PyTorch twin with the same weights gives
the same outputs (stride-2 'SAME' would pad (0, 1) instead). NHWC inputs.
11,173,962 params with 10 classes.

ResNet50: torchvision's `resnet50` layout (ImageNet 224x224x3): 7x7 stride-2
stem conv (padding 3), BatchNorm, ReLU, 3x3 stride-2 max-pool (padding 1),
bottleneck blocks [3, 4, 6, 3] with expansion 4 and the stride on the 3x3 conv
("v1.5"), BatchNorm after every conv, no conv bias, global average pool,
Dense(1000). 25,557,032 params, as torchvision. BatchNorm uses torch's
epsilon 1e-5 and momentum 0.1 (flax momentum 0.9); per-example gradients need
it in inference mode (`from_nnx` puts the model there). Kernels use flax's
default initializers, not torchvision's.

Example (shapes only; `nnx.eval_shape` allocates nothing):
  >>> resnet = nnx.eval_shape(lambda: ResNet18GN(rngs=nnx.Rngs(0)))
  >>> sum(p.size for p in jax.tree.leaves(nnx.state(resnet, nnx.Param)))
  11173962
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

_PAD1 = ((1, 1), (1, 1))
_PAD3 = ((3, 3), (3, 3))


def _conv3(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (3, 3), strides=stride, padding=_PAD1,
                  use_bias=False, rngs=rngs)


def _norm(channels: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
  """conv3x3-GN-ReLU-conv3x3-GN, plus identity or 1x1-conv-GN shortcut; ReLU.

  Args:
    cin: input channels.
    cout: output channels.
    stride: stride of the first conv (and of the shortcut conv).
    groups: GroupNorm groups (must divide `cout`).
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: BasicBlock(16, 32, 2, 8, rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)).shape
    (1, 4, 4, 32)
  """

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
    """Output [B, H / stride, W / stride, cout] of NHWC x [B, H, W, cin]."""
    y = jax.nn.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    if self.shortcut_conv is not None:
      x = self.shortcut_norm(self.shortcut_conv(x))
    return jax.nn.relu(x + y)


class ResNet18GN(nnx.Module):
  """ResNet-18, GroupNorm(32), CIFAR stem; 11,173,962 params (10 classes).

  Args:
    num_classes: output logits.
    in_channels: input channels.
    widths: channels of the four stages.
    blocks: basic blocks per stage.
    groups: GroupNorm groups (must divide every width).
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: ResNet18GN(rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)).shape
    (2, 10)
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
    """Logits [B, num_classes] of NHWC images x [B, H, W, in_channels]."""
    x = jax.nn.relu(self.stem_norm(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x)


def _conv1(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (1, 1), strides=stride, padding='VALID',
                  use_bias=False, rngs=rngs)


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= flax momentum 0.9).
  return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs)


class Bottleneck(nnx.Module):
  """1x1-BN-ReLU, 3x3(stride)-BN-ReLU, 1x1(x expansion)-BN, plus shortcut; ReLU.

  The shortcut is the identity, or 1x1-conv(stride)-BN when the shape changes
  (torchvision's `Bottleneck`, stride on the 3x3 conv).

  Args:
    cin: input channels.
    width: channels of the 1x1 and 3x3 convs.
    stride: stride of the 3x3 conv (and of the shortcut conv).
    expansion: output channels are `width * expansion`.
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: Bottleneck(16, 8, 2, 4, rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)).shape
    (1, 4, 4, 32)
  """

  def __init__(self, cin: int, width: int, stride: int, expansion: int, *,
               rngs: nnx.Rngs):
    cout = width * expansion
    self.conv1 = _conv1(cin, width, 1, rngs)
    self.norm1 = _bn(width, rngs)
    self.conv2 = _conv3(width, width, stride, rngs)
    self.norm2 = _bn(width, rngs)
    self.conv3 = _conv1(width, cout, 1, rngs)
    self.norm3 = _bn(cout, rngs)
    if stride != 1 or cin != cout:
      self.shortcut_conv = _conv1(cin, cout, stride, rngs)
      self.shortcut_norm = _bn(cout, rngs)
    else:
      self.shortcut_conv = None
      self.shortcut_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    """Output [B, H / stride, W / stride, width * expansion] of NHWC x."""
    y = jax.nn.relu(self.norm1(self.conv1(x)))
    y = jax.nn.relu(self.norm2(self.conv2(y)))
    y = self.norm3(self.conv3(y))
    if self.shortcut_conv is not None:
      x = self.shortcut_norm(self.shortcut_conv(x))
    return jax.nn.relu(x + y)


class ResNet50(nnx.Module):
  """ResNet-50, BatchNorm, ImageNet stem; 25,557,032 params (1000 classes).

  `widths` are the bottleneck widths of the four stages (block outputs are
  `expansion` times wider; the stem has `widths[0]` channels); smaller widths
  or `blocks` give a cheaper net of the same layout. Any input size >= 32
  works (224x224 is the ImageNet shape). NHWC inputs.

  `ResNet50(rngs=nnx.Rngs(0))(jnp.zeros((2, 224, 224, 3))).shape == (2, 1000)`

  Args:
    num_classes: output logits.
    in_channels: input channels.
    widths: bottleneck widths of the four stages.
    blocks: bottleneck blocks per stage.
    expansion: block output channels per bottleneck width.
    rngs: the `nnx.Rngs` for the initializers.

  Example (a narrow, one-block-per-stage net of the same layout):
    >>> small = lambda x: ResNet50(num_classes=10, widths=(4, 4, 4, 4),
    ...                            blocks=(1, 1, 1, 1), rngs=nnx.Rngs(0))(x)
    >>> x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    >>> jax.eval_shape(small, x).shape
    (2, 10)
  """

  def __init__(self, num_classes: int = 1000, in_channels: int = 3,
               widths: Sequence[int] = (64, 128, 256, 512),
               blocks: Sequence[int] = (3, 4, 6, 3), expansion: int = 4, *,
               rngs: nnx.Rngs):
    self.stem_conv = nnx.Conv(in_channels, widths[0], (7, 7), strides=2,
                              padding=_PAD3, use_bias=False, rngs=rngs)
    self.stem_norm = _bn(widths[0], rngs)
    layers = []
    cin = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
      for i in range(count):
        stride = 2 if (stage > 0 and i == 0) else 1
        layers.append(Bottleneck(cin, width, stride, expansion, rngs=rngs))
        cin = width * expansion
    self.blocks = nnx.List(layers)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] of NHWC images x [B, H, W, in_channels]."""
    x = jax.nn.relu(self.stem_norm(self.stem_conv(x)))
    # torch MaxPool2d(3, 2, padding=1): pads with -inf, as nnx.max_pool does.
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x)
