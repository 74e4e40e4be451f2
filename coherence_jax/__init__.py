"""coherence_jax: Coherent Gradients in JAX."""

from coherence_jax import aggregators
from coherence_jax import models
from coherence_jax.coherence import CoherenceStats
from coherence_jax.coherence import coherence_stats
from coherence_jax.ghost import per_example_sq_norms
from coherence_jax.nnx_bridge import from_nnx
from coherence_jax.per_example import per_example_grads
from coherence_jax.per_example import per_group_grads
from coherence_jax.robust_grad import trimmed_mean_grad
from coherence_jax.robust_grad import winsorized_mean_grad

__all__ = [
    'CoherenceStats',
    'aggregators',
    'coherence_stats',
    'from_nnx',
    'models',
    'per_example_grads',
    'per_example_sq_norms',
    'per_group_grads',
    'trimmed_mean_grad',
    'winsorized_mean_grad',
]
