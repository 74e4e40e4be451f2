"""Datasets: the embedded offline MNIST subset, tfds data sources, label corruption."""

from coherence_jax.data.corruption import corrupt_labels
from coherence_jax.data.corruption import random_labels
from coherence_jax.data.mnist5k import load_mnist5k

__all__ = ['corrupt_labels', 'load_mnist5k', 'random_labels']
