"""Robust aggregation of gradients: Optax transforms and streaming estimators.

Per-example transforms (leading example axis in, one update out; first in
`optax.chain`, or the aggregator of `optax.experimental.aggregating.process`,
whose `Aggregator`s they are): `winsorized_mean`, `trimmed_mean`,
`median_of_means`, `coordinate_median`. They record the param shapes at init
and check the updates by path (_contract.py). Transforms over steps (ordinary gradients, anywhere in a
chain): `rolling_median` (RM3), `rolling_mean` (RA3), `periodic_median` (M3).
`factored_grads` gives per-example gradients with Dense kernels kept as
outer-product factors, which the per-example transforms consume without
materializing them.

Example (jit the step: run eagerly, every operation compiles on its own):
  >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1))
  >>> @jax.jit
  ... def step(params, state, batch):
  ...   grads = factored_grads(loss_fn, params, batch)  # Dense kernels as factors
  ...   return opt.update(grads, state, params)
  >>> updates, state = step(params, opt.init(params), batch)
  >>> updates['layers'][0]['kernel'].shape
  (784, 32)
"""

from coherence_jax.aggregators.coordinatewise import coordinate_median
from coherence_jax.aggregators.coordinatewise import median_of_means
from coherence_jax.aggregators.coordinatewise import trimmed_mean
from coherence_jax.aggregators.coordinatewise import winsorized_mean
from coherence_jax.aggregators.over_steps import periodic_median
from coherence_jax.aggregators.over_steps import rolling_mean
from coherence_jax.aggregators.over_steps import rolling_median
from coherence_jax.per_example.factored_dense import OuterRows
from coherence_jax.per_example.factored_dense import factored_grads
from coherence_jax.per_example.factored_dense import materialize_grads

__all__ = [
    'OuterRows',
    'coordinate_median',
    'factored_grads',
    'materialize_grads',
    'median_of_means',
    'periodic_median',
    'rolling_mean',
    'rolling_median',
    'trimmed_mean',
    'winsorized_mean',
]
