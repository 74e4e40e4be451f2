"""coherence_jax: Coherent Gradients in JAX."""

from coherence_jax import models
from coherence_jax.coherence import CoherenceStats
from coherence_jax.coherence import coherence_stats
from coherence_jax.nnx_bridge import from_nnx
from coherence_jax.per_example import per_example_grads
from coherence_jax.per_example import per_group_grads

__all__ = [
    'CoherenceStats',
    'coherence_stats',
    'from_nnx',
    'models',
    'per_example_grads',
    'per_group_grads',
]
