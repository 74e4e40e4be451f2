"""coherence_jax: Coherent Gradients in JAX.

The top-level functions are jitted (see `api.py`); the modules below hold the
plain traceable functions they are built from.

  coherence_stats       S, Q and m of a batch's per-example gradients
                        (`CoherenceStats`: α, m-coherence, report).
  per_example_grads     per-example gradients, [B, *param.shape] per leaf.
  per_example_sq_norms  per-example squared gradient norms (ghost norms).
  per_group_grads       mean gradient of each of k equal groups of examples.
  winsorized_mean_grad, trimmed_mean_grad
                        robust mean gradients, streamed over micro-batches.
  value_and_grad        `jax.value_and_grad` of the mean loss with the
                        batch's CoherenceStats as aux, one backward pass.
  NoiseScaleEMA         the gradient noise scale smoothed over steps.
  schedules             when to measure (`should_measure(step)`).
  from_nnx              a Flax NNX model as `loss_fn(params, batch) -> [B]`.
  norm_paths            which way each param's per-example norms are taken.
  register_ghost_rule   ghost norms for a layer type of one's own.
  aggregators, models   Optax robust aggregators; the experiments' models.

Example:
  >>> import coherence_jax as cj
  >>> from flax import nnx
  >>> from coherence_jax.models import MLP, cross_entropy_loss
  >>> loss_fn, params = cj.from_nnx(MLP([784, 32, 10], rngs=nnx.Rngs(0)),
  ...                               cross_entropy_loss)
  >>> batch = {'image': jnp.ones((8, 784)), 'label': jnp.arange(8) % 10}
  >>> stats = cj.coherence_stats(loss_fn, params, batch)
  >>> int(stats.count), 0.0 <= float(stats.alpha()) <= 1.0
  (8, True)
"""

from coherence_jax import aggregators
from coherence_jax import models
from coherence_jax import schedules
from coherence_jax.api import coherence_stats
from coherence_jax.api import per_example_grads
from coherence_jax.api import per_example_sq_norms
from coherence_jax.api import per_group_grads
from coherence_jax.api import trimmed_mean_grad
from coherence_jax.api import value_and_grad
from coherence_jax.noise_scale import NoiseScaleEMA
from coherence_jax.api import winsorized_mean_grad
from coherence_jax.per_example.ghost import norm_paths
from coherence_jax.per_example.ghost import register_ghost_rule
from coherence_jax.per_example.ghost import unregister_ghost_rule
from coherence_jax.per_example.nnx_bridge import from_nnx
from coherence_jax.stats import CoherenceStats

__all__ = [
    'CoherenceStats',
    'NoiseScaleEMA',
    'aggregators',
    'coherence_stats',
    'from_nnx',
    'models',
    'norm_paths',
    'per_example_grads',
    'per_example_sq_norms',
    'per_group_grads',
    'register_ghost_rule',
    'schedules',
    'trimmed_mean_grad',
    'unregister_ghost_rule',
    'value_and_grad',
    'winsorized_mean_grad',
]
