"""ResNets (Flax NNX): basic or bottleneck blocks, CIFAR or ImageNet stem,
BatchNorm or GroupNorm; and the two fixed models the benchmarks use.

`ResNet` follows torchvision's layout: convs without bias and with explicit
PyTorch padding (stride-2 'SAME' would pad (0, 1) instead of (1, 1)), a norm
after every conv, identity or 1x1-conv-norm shortcuts, the stride on the first
3x3 conv of a basic block and on the 3x3 conv of a bottleneck ("v1.5"),
global average pool, Dense head. Stems: 'imagenet' = 7x7 stride-2 conv
(padding 3), norm, ReLU, 3x3 stride-2 max-pool (padding 1); 'cifar' = one 3x3
stride-1 conv, norm, ReLU, no max-pool. NHWC inputs. Parameter counts (norm
'batch' or 'group' alike: both have a scale and a bias per channel):
ResNet-18 11,689,512 (ImageNet stem, 1000 classes, = torchvision) and
11,173,962 (CIFAR stem, 10 classes); ResNet-50 25,557,032 (= torchvision).

BatchNorm uses torch's epsilon 1e-5 and momentum 0.1 (flax momentum 0.9); it
couples the examples of a batch in train mode, so per-example gradients need
inference mode (`from_nnx` puts the model there). Kernels use flax's default
initializers, not torchvision's.

ResNet18GN: the CIFAR ResNet-18 with GroupNorm(32) (the benchmarks' model and
its PyTorch twin). ResNet50: the torchvision ResNet-50 with BatchNorm.

Example (shapes only; `nnx.eval_shape` allocates nothing):
  >>> resnet = nnx.eval_shape(lambda: ResNet18GN(rngs=nnx.Rngs(0)))
  >>> sum(p.size for p in jax.tree.leaves(nnx.state(resnet, nnx.Param)))
  11173962
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax.models.norms import apply_norm
from coherence_jax.models.norms import check_norm
from coherence_jax.models.norms import make_norm

_PAD1 = ((1, 1), (1, 1))
_PAD3 = ((3, 3), (3, 3))


BLOCKS = ('basic', 'bottleneck')
STEMS = ('imagenet', 'cifar')


def _conv3(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (3, 3), strides=stride, padding=_PAD1,
                  use_bias=False, rngs=rngs)


def _conv1(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (1, 1), strides=stride, padding='VALID',
                  use_bias=False, rngs=rngs)


class BasicBlock(nnx.Module):
  """conv3x3-norm-ReLU-conv3x3-norm, plus identity or 1x1-conv-norm
  shortcut; ReLU.

  Args:
    cin: input channels.
    cout: output channels.
    stride: stride of the first conv (and of the shortcut conv).
    groups: GroupNorm groups (must divide `cout`; unused by other norms).
    norm: 'group' (default), 'batch' or None.
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: BasicBlock(16, 32, 2, 8, rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)).shape
    (1, 4, 4, 32)
  """

  def __init__(self, cin: int, cout: int, stride: int, groups: int = 32, *,
               norm: Optional[str] = 'group', rngs: nnx.Rngs):
    self.conv1 = _conv3(cin, cout, stride, rngs)
    self.norm1 = make_norm(norm, cout, rngs=rngs, groups=groups)
    self.conv2 = _conv3(cout, cout, 1, rngs)
    self.norm2 = make_norm(norm, cout, rngs=rngs, groups=groups)
    if stride != 1 or cin != cout:
      self.shortcut_conv = _conv1(cin, cout, stride, rngs)
      self.shortcut_norm = make_norm(norm, cout, rngs=rngs, groups=groups)
    else:
      self.shortcut_conv = None
      self.shortcut_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    """Output [B, H / stride, W / stride, cout] of NHWC x [B, H, W, cin]."""
    y = jax.nn.relu(apply_norm(self.norm1, self.conv1(x)))
    y = apply_norm(self.norm2, self.conv2(y))
    if self.shortcut_conv is not None:
      x = apply_norm(self.shortcut_norm, self.shortcut_conv(x))
    return jax.nn.relu(x + y)


class Bottleneck(nnx.Module):
  """1x1-norm-ReLU, 3x3(stride)-norm-ReLU, 1x1(x expansion)-norm, plus
  shortcut; ReLU.

  The shortcut is the identity, or 1x1-conv(stride)-norm when the shape
  changes (torchvision's `Bottleneck`, stride on the 3x3 conv).

  Args:
    cin: input channels.
    width: channels of the 1x1 and 3x3 convs.
    stride: stride of the 3x3 conv (and of the shortcut conv).
    expansion: output channels are `width * expansion`.
    norm: 'batch' (default), 'group' or None.
    groups: GroupNorm groups.
    rngs: the `nnx.Rngs` for the initializers.

  Example:
    >>> jax.eval_shape(lambda x: Bottleneck(16, 8, 2, 4, rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)).shape
    (1, 4, 4, 32)
  """

  def __init__(self, cin: int, width: int, stride: int, expansion: int, *,
               norm: Optional[str] = 'batch', groups: int = 32,
               rngs: nnx.Rngs):
    cout = width * expansion
    self.conv1 = _conv1(cin, width, 1, rngs)
    self.norm1 = make_norm(norm, width, rngs=rngs, groups=groups)
    self.conv2 = _conv3(width, width, stride, rngs)
    self.norm2 = make_norm(norm, width, rngs=rngs, groups=groups)
    self.conv3 = _conv1(width, cout, 1, rngs)
    self.norm3 = make_norm(norm, cout, rngs=rngs, groups=groups)
    if stride != 1 or cin != cout:
      self.shortcut_conv = _conv1(cin, cout, stride, rngs)
      self.shortcut_norm = make_norm(norm, cout, rngs=rngs, groups=groups)
    else:
      self.shortcut_conv = None
      self.shortcut_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    """Output [B, H / stride, W / stride, width * expansion] of NHWC x."""
    y = jax.nn.relu(apply_norm(self.norm1, self.conv1(x)))
    y = jax.nn.relu(apply_norm(self.norm2, self.conv2(y)))
    y = apply_norm(self.norm3, self.conv3(y))
    if self.shortcut_conv is not None:
      x = apply_norm(self.shortcut_norm, self.shortcut_conv(x))
    return jax.nn.relu(x + y)


class ResNet(nnx.Module):
  """A ResNet of basic or bottleneck blocks, either stem, any norm.

  ResNet-18 = block 'basic', blocks (2, 2, 2, 2); ResNet-34 (3, 4, 6, 3);
  ResNet-50 = block 'bottleneck', blocks (3, 4, 6, 3) (`registry.build`
  names them). `widths` are the stage widths (bottleneck widths; block outputs
  are `expansion` times wider); the stem has `widths[0]` channels.

  Args:
    num_classes: output logits.
    in_channels: input channels.
    block: 'basic' or 'bottleneck'.
    blocks: blocks per stage.
    widths: channels (bottleneck widths) of the stages.
    expansion: bottleneck output channels per width (unused by 'basic').
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv).
    norm: 'batch', 'group' or None.
    groups: GroupNorm groups.
    rngs: the `nnx.Rngs` for the initializers.

  Raises:
    ValueError: an unknown block, stem or norm.

  Example:
    >>> net = lambda x: ResNet(10, block='basic', blocks=(1, 1), widths=(8, 16),
    ...                        stem='cifar', norm='group', groups=4,
    ...                        rngs=nnx.Rngs(0))(x)
    >>> jax.eval_shape(net, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)).shape
    (2, 10)
  """

  def __init__(self, num_classes: int = 1000, in_channels: int = 3, *,
               block: str = 'basic', blocks: Sequence[int] = (2, 2, 2, 2),
               widths: Sequence[int] = (64, 128, 256, 512),
               expansion: int = 4, stem: str = 'imagenet',
               norm: Optional[str] = 'batch', groups: int = 32,
               rngs: nnx.Rngs):
    if block not in BLOCKS:
      raise ValueError(f'block: got {block!r}; pass one of {BLOCKS}.')
    if stem not in STEMS:
      raise ValueError(f'stem: got {stem!r}; pass one of {STEMS}.')
    check_norm(norm)
    if len(blocks) != len(widths):
      raise ValueError(f'blocks, widths: got {tuple(blocks)} and '
                       f'{tuple(widths)}; pass one width per stage.')
    if stem == 'imagenet':
      self.stem_conv = nnx.Conv(in_channels, widths[0], (7, 7), strides=2,
                                padding=_PAD3, use_bias=False, rngs=rngs)
    else:
      self.stem_conv = _conv3(in_channels, widths[0], 1, rngs)
    self.stem_norm = make_norm(norm, widths[0], rngs=rngs, groups=groups)
    self.stem_pool = stem == 'imagenet'
    layers = []
    cin = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
      for i in range(count):
        stride = 2 if (stage > 0 and i == 0) else 1
        if block == 'basic':
          layers.append(BasicBlock(cin, width, stride, groups, norm=norm,
                                   rngs=rngs))
          cin = width
        else:
          layers.append(Bottleneck(cin, width, stride, expansion, norm=norm,
                                   groups=groups, rngs=rngs))
          cin = width * expansion
    self.blocks = nnx.List(layers)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, num_classes] of NHWC images x [B, H, W, in_channels]."""
    x = jax.nn.relu(apply_norm(self.stem_norm, self.stem_conv(x)))
    if self.stem_pool:
      # torch MaxPool2d(3, 2, padding=1): pads with -inf, as nnx.max_pool does.
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x)


class ResNet18GN(ResNet):
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
    super().__init__(num_classes, in_channels, block='basic', blocks=blocks,
                     widths=widths, stem='cifar', norm='group', groups=groups,
                     rngs=rngs)


class ResNet50(ResNet):
  """ResNet-50, BatchNorm, ImageNet stem; 25,557,032 params (1000 classes).

  torchvision's `resnet50` layout (ImageNet 224x224x3). Smaller widths or
  `blocks` give a cheaper net of the same layout. Any input size >= 32 works.

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
    super().__init__(num_classes, in_channels, block='bottleneck',
                     blocks=blocks, widths=widths, expansion=expansion,
                     stem='imagenet', norm='batch', rngs=rngs)
