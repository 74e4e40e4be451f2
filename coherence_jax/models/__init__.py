"""Flax NNX models used by the experiments, chosen by name."""

from coherence_jax.models.cnn import CNN
from coherence_jax.models.losses import cross_entropy_loss
from coherence_jax.models.mlp import MLP

__all__ = ['CNN', 'MLP', 'cross_entropy_loss']
