"""Ghost norms: per-example squared gradient norms from one backward pass.

The modules, from the entry points down:
  norms.py        the pass: `per_example_sq_norms`, `sum_and_sq_norms` (S and
                  every norm from one seeded `jax.grad`), `norm_paths`; the
                  vmap fallback for params no rule covers.
  plan.py         one trace of the loss: which layers take which ghost path
                  (calls per example, form per layer, supported kinds).
  linen.py        the same plan and hooks for Flax linen models
                  (`intercept_methods`).
  rules.py        the per-layer math: outer / Gram / materialized forms,
                  conv im2col, the per-module fallback.
  reuse.py        layers called several times per example: exact cross terms.
  registry.py     which rule a module type gets (`register_ghost_rule`).
  gram.py         Gram-matrix norms over positions.
  contraction.py  Linear / LinearGeneral / Einsum / Embed.attend calls as one
                  matrix contraction per example.
Shared with the other per-example paths (they stay in per_example/):
module_hooks.py (interception of NNX module calls), jaxpr_deps.py (which
inputs reach the loss), nnx_bridge.py, vmap_grads.py.

This package re-exports the entry points of norms.py and registry.py. How and
why, with the measurements behind the choices: docs/design/ghost_norms.md.
"""

from coherence_jax.per_example.ghost.norms import METHODS
from coherence_jax.per_example.ghost.norms import GhostPass
from coherence_jax.per_example.ghost.norms import check_ghost_args
from coherence_jax.per_example.ghost.norms import loss_seed
from coherence_jax.per_example.ghost.norms import norm_paths
from coherence_jax.per_example.ghost.norms import per_example_sq_norms
from coherence_jax.per_example.ghost.norms import scaled_sum_and_sq_norms
from coherence_jax.per_example.ghost.norms import sum_and_sq_norms
from coherence_jax.per_example.ghost.norms import uses_ghost
from coherence_jax.per_example.ghost.registry import register_ghost_rule
from coherence_jax.per_example.ghost.registry import unregister_ghost_rule

__all__ = [
    'GhostPass',
    'METHODS',
    'check_ghost_args',
    'loss_seed',
    'norm_paths',
    'per_example_sq_norms',
    'register_ghost_rule',
    'scaled_sum_and_sq_norms',
    'sum_and_sq_norms',
    'unregister_ghost_rule',
    'uses_ghost',
]
