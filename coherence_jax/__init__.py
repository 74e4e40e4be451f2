"""coherence_jax: Coherent Gradients in JAX.

The top-level functions are jitted (see `api.py`); the modules below hold the
plain traceable functions they are built from.
"""

from coherence_jax import aggregators
from coherence_jax import models
from coherence_jax.api import coherence_stats
from coherence_jax.api import per_example_grads
from coherence_jax.api import per_example_sq_norms
from coherence_jax.api import per_group_grads
from coherence_jax.api import trimmed_mean_grad
from coherence_jax.api import winsorized_mean_grad
from coherence_jax.per_example.nnx_bridge import from_nnx
from coherence_jax.stats import CoherenceStats

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
