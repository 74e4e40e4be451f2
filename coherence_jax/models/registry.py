"""Models by name: `build(name, num_classes=..., input_shape=..., rngs=...)`.

  mlp                     ReLU MLP on flattened inputs; `hidden=(2048,)` widths.
  cnn                     the small CNN (two conv + pool blocks, two Dense).
  resnet18, resnet50      `stem='auto'` (default): 'cifar' (3x3/1 conv, no
                          max-pool) for inputs up to 64x64, 'imagenet' (7x7/2
                          conv + max-pool) above; or pass stem=.
  vgg11, vgg13, vgg16     plain VGG; `head='auto'`: 'cifar' (global pool, one
  vgg11_bn, vgg13_bn,     Dense) up to 64x64, 'imagenet' (7x7 pool, 4096-4096
  vgg16_bn                with dropout, torchvision) above.

`norm`: 'default' (each architecture as usually defined: BatchNorm in the
ResNets and '_bn' VGGs, none in mlp, cnn and plain VGGs), or 'batch',
'group' (GroupNorm, 32 groups) or None. BatchNorm couples the examples of a
batch in train mode; per-example gradients and coherence need the model in
inference mode (`from_nnx`), with running statistics that training must
have updated. GroupNorm models are per-example independent in both modes.

Parameter counts (tests/test_models_registry.py): resnet18 11,689,512 at
224x224x3 / 1000 classes and 11,173,962 at 32x32x3 / 10; resnet50 25,557,032;
vgg16 138,357,544 (torchvision's numbers).

Example:
  >>> model = nnx.eval_shape(lambda: build(   # shapes only: allocates nothing
  ...     'resnet18', num_classes=10, input_shape=(32, 32, 3), norm='group',
  ...     rngs=nnx.Rngs(0)))
  >>> num_params(model)
  11173962
  >>> build('resnet19', num_classes=10, input_shape=(32, 32, 3),
  ...       rngs=nnx.Rngs(0))
  Traceback (most recent call last):
  ValueError: name: got 'resnet19'; pass one of ('mlp', 'cnn', 'resnet18', ...
"""

import inspect
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
from flax import nnx

from coherence_jax import _checks
from coherence_jax.models.cnn import CNN
from coherence_jax.models.mlp import MLP
from coherence_jax.models.norms import NORMS
from coherence_jax.models.resnet import ResNet
from coherence_jax.models.transformer import Transformer
from coherence_jax.models.vgg import VGG
from coherence_jax.models.vit import ViT

DEFAULT = 'default'  # `norm=DEFAULT`: the architecture's usual norm.
# Inputs up to this height and width get the CIFAR stem / head under 'auto'.
_SMALL_INPUT = 64


def _auto(choice: str, input_shape: Sequence[int], small: str,
          large: str) -> str:
  if choice != 'auto':
    return choice
  return small if max(input_shape[:2]) <= _SMALL_INPUT else large


def _no_norm(name: str, norm) -> None:
  if norm not in (DEFAULT, None):
    raise ValueError(f'norm: got {norm!r}; {name} has no norm layers, pass '
                     'norm=None (or leave the default).')


def _mlp(*, num_classes, input_shape, norm, rngs,
         hidden: Sequence[int] = (2048,)) -> nnx.Module:
  _no_norm('mlp', norm)
  return MLP([math.prod(input_shape), *hidden, num_classes], rngs=rngs)


def _cnn(*, num_classes, input_shape, norm, rngs) -> nnx.Module:
  _no_norm('cnn', norm)
  height, width, channels = input_shape
  if height != width:
    raise ValueError(f'input_shape: got {input_shape}; the cnn takes square '
                     'images (height == width).')
  return CNN(num_classes, in_channels=channels, image_size=height, rngs=rngs)


def _resnet(block: str, blocks: Tuple[int, ...]) -> Callable[..., nnx.Module]:
  def build_resnet(*, num_classes, input_shape, norm, rngs,
                   stem: str = 'auto', groups: int = 32,
                   widths: Sequence[int] = (64, 128, 256, 512)) -> nnx.Module:
    return ResNet(num_classes, input_shape[-1], block=block, blocks=blocks,
                  widths=widths, stem=_auto(stem, input_shape, 'cifar',
                                            'imagenet'),
                  norm='batch' if norm == DEFAULT else norm, groups=groups,
                  rngs=rngs)
  return build_resnet


def _vgg(depth: int, batch_norm: bool) -> Callable[..., nnx.Module]:
  name = f'vgg{depth}' + ('_bn' if batch_norm else '')

  def build_vgg(*, num_classes, input_shape, norm, rngs, head: str = 'auto',
                dropout: float = 0.5, groups: int = 32) -> nnx.Module:
    if norm == DEFAULT:
      norm = 'batch' if batch_norm else None
    elif batch_norm and norm is None:
      raise ValueError(f"norm: got None for {name!r}; pass 'batch' or "
                       f"'group', or name 'vgg{depth}' for no norm.")
    return VGG(num_classes, input_shape[-1], depth=depth, norm=norm,
               head=_auto(head, input_shape, 'cifar', 'imagenet'),
               dropout=dropout, groups=groups, rngs=rngs)
  return build_vgg


def _vit(*, num_classes, input_shape, norm, rngs, patch_size: int = 7,
         d_model: int = 64, num_heads: int = 4, num_layers: int = 2,
         pool: str = 'cls') -> nnx.Module:
  _no_norm('vit', norm)  # its LayerNorms are part of the architecture
  height, width, channels = input_shape
  return ViT(num_classes, image_size=(height, width), patch_size=patch_size,
             in_channels=channels, d_model=d_model, num_heads=num_heads,
             num_layers=num_layers, pool=pool, rngs=rngs)


def _transformer(*, num_classes, input_shape, norm, rngs, d_model: int = 128,
                 num_heads: int = 4, num_layers: int = 2, mlp_ratio: int = 4,
                 tie_embeddings: bool = True) -> nnx.Module:
  """num_classes is the vocabulary; input_shape is (max_len,) tokens."""
  _no_norm('transformer', norm)
  return Transformer(num_classes, d_model, num_heads, num_layers,
                     max_len=input_shape[0], mlp_ratio=mlp_ratio,
                     tie_embeddings=tie_embeddings, rngs=rngs)


_BUILDERS: Dict[str, Callable[..., nnx.Module]] = {
    'mlp': _mlp,
    'cnn': _cnn,
    'resnet18': _resnet('basic', (2, 2, 2, 2)),
    'resnet50': _resnet('bottleneck', (3, 4, 6, 3)),
    'vgg11': _vgg(11, False),
    'vgg11_bn': _vgg(11, True),
    'vgg13': _vgg(13, False),
    'vgg13_bn': _vgg(13, True),
    'vgg16': _vgg(16, False),
    'vgg16_bn': _vgg(16, True),
    'vit': _vit,
    'transformer': _transformer,
}
NAMES = tuple(_BUILDERS)


def _check_shape(input_shape, name: str) -> Tuple[int, ...]:
  shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
  ok = shape and all(_checks.is_int(d) and d >= 1
                     for d in shape)
  want = {'mlp': None, 'transformer': 1}.get(name, 3)
  if not ok or (want is not None and len(shape) != want):
    raise ValueError(f'input_shape: got {input_shape!r}; pass one example\'s '
                     'shape, (height, width, channels) e.g. (32, 32, 3) '
                     '(the mlp takes any shape, the transformer (max_len,)).')
  return tuple(int(d) for d in shape)


def build(name: str, *, num_classes: int, input_shape: Sequence[int],
          norm: Optional[str] = DEFAULT, rngs: nnx.Rngs,
          **kwargs: Any) -> nnx.Module:
  """The model `name` for inputs of `input_shape` and `num_classes` logits.

  Args:
    name: one of `NAMES`.
    num_classes: output logits.
    input_shape: one example's shape, (height, width, channels) (NHWC
      batches); the mlp flattens any shape.
    norm: 'default' (the architecture's usual norm), 'batch', 'group' or None.
    rngs: the `nnx.Rngs` for the initializers.
    **kwargs: the architecture's options: mlp `hidden`; resnets `stem`
      ('auto', 'cifar', 'imagenet'), `groups`, `widths`; vggs `head`
      ('auto', 'cifar', 'imagenet'), `dropout`, `groups`; transformer
      `d_model`, `num_heads`, `num_layers`, `mlp_ratio`, `tie_embeddings`.

  Returns:
    The `nnx.Module`, mapping images [B, *input_shape] to logits
    [B, num_classes].

  Raises:
    ValueError: an unknown name (listing NAMES), norm, option (listing the
      valid ones) or a bad num_classes / input_shape.

  Example:
    >>> mlp = build('mlp', num_classes=10, input_shape=(28, 28, 1),
    ...             hidden=(32, 32), rngs=nnx.Rngs(0))
    >>> [layer.kernel.shape for layer in mlp.layers]
    [(784, 32), (32, 32), (32, 10)]
  """
  if name not in _BUILDERS:
    raise ValueError(f'name: got {name!r}; pass one of {NAMES}.')
  if not _checks.is_int(num_classes) or num_classes < 1:
    raise ValueError(f'num_classes: got {num_classes!r}; pass an int >= 1.')
  if norm != DEFAULT and norm not in NORMS:
    raise ValueError(f'norm: got {norm!r}; pass one of {(DEFAULT,) + NORMS}.')
  input_shape = _check_shape(input_shape, name)
  builder = _BUILDERS[name]
  options = [p for p in inspect.signature(builder).parameters
             if p not in ('num_classes', 'input_shape', 'norm', 'rngs')]
  unknown = sorted(set(kwargs) - set(options))
  if unknown:
    raise ValueError(f'{unknown[0]}: not an option of {name!r}; its options '
                     f'are {tuple(options)}.')
  return builder(num_classes=int(num_classes), input_shape=input_shape,
                 norm=norm, rngs=rngs, **kwargs)


def num_params(model: nnx.Module) -> int:
  """Number of `nnx.Param` values (BatchNorm statistics not counted).

  Example:
    >>> num_params(nnx.eval_shape(lambda: build(
    ...     'resnet50', num_classes=1000, input_shape=(224, 224, 3),
    ...     rngs=nnx.Rngs(0))))
    25557032
  """
  return sum(int(math.prod(x.shape))
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
