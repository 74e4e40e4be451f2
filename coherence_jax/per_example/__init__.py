"""Per-example gradients and their squared norms; the NNX bridge.

`vmap_grads`: per-example / per-group gradients (vmap of grad, micro-batched).
`ghost`: per-example squared norms without per-example gradients, planned per
layer (`ghost_rules`) through module interception (`module_hooks`,
`jaxpr_deps`). `nnx_bridge`: an NNX model as a pure `loss_fn(params, batch)`.
"""
