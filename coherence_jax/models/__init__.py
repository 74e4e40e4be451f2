"""Flax NNX models used by the experiments, chosen by name.

`build(name, num_classes=..., input_shape=..., norm=..., rngs=...)` makes any
of `NAMES` (registry.py); the classes are importable too. Each takes
`rngs=nnx.Rngs(seed)`; `cross_entropy_loss` is the per-example loss
`from_nnx` expects.

Example:
  >>> from coherence_jax import models
  >>> loss_fn, params = from_nnx(models.MLP([784, 32, 10], rngs=nnx.Rngs(0)),
  ...                            models.cross_entropy_loss)
  >>> loss_fn(params, batch).shape
  (16,)
"""

from coherence_jax.models.cnn import CNN
from coherence_jax.models.losses import cross_entropy_loss
from coherence_jax.models.losses import last_token_loss
from coherence_jax.models.losses import next_token_loss
from coherence_jax.models.mlp import MLP
from coherence_jax.models.registry import NAMES
from coherence_jax.models.registry import build
from coherence_jax.models.registry import num_params
from coherence_jax.models.resnet import ResNet
from coherence_jax.models.resnet import ResNet18GN
from coherence_jax.models.resnet import ResNet50
from coherence_jax.models.transformer import Transformer
from coherence_jax.models.transformer import TransformerBlock
from coherence_jax.models.vgg import VGG
from coherence_jax.models.vit import ViT

__all__ = ['CNN', 'MLP', 'NAMES', 'ResNet', 'ResNet18GN', 'ResNet50',
           'Transformer', 'TransformerBlock', 'VGG', 'ViT', 'build',
           'cross_entropy_loss', 'last_token_loss', 'next_token_loss',
           'num_params']
