"""Flax NNX models used by the experiments, chosen by name."""

from coherence_jax.models.cnn import CNN
from coherence_jax.models.losses import cross_entropy_loss
from coherence_jax.models.mlp import MLP
from coherence_jax.models.resnet import ResNet18GN
from coherence_jax.models.resnet import ResNet50

__all__ = ['CNN', 'MLP', 'ResNet18GN', 'ResNet50', 'cross_entropy_loss']
