"""Per-example gradients and their squared norms; the NNX bridge.

`vmap_grads`: per-example / per-group gradients (vmap of grad, micro-batched).
`factored_dense`: per-example gradients with Dense kernels kept as factors and
conv kernels from patches (what `aggregators` consumes without materializing).
`ghost/`: per-example squared norms without per-example gradients, planned per
layer (`ghost.plan`, `ghost.rules`) through module interception
(`module_hooks`, `jaxpr_deps`). `nnx_bridge`: an NNX model as a pure
`loss_fn(params, batch)`.

These are the plain traceable functions (`coherence_jax` jits them):
  >>> from coherence_jax.per_example import vmap_grads
  >>> g = jax.eval_shape(
  ...     lambda p: vmap_grads.per_example_grads(loss_fn, p, batch), params)
  >>> g['layers'][0]['kernel'].shape
  (16, 784, 32)
"""
