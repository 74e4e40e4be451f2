"""Per-example gradients with Dense kernels factored and conv kernels from patches.

For a Dense layer z = a W + b applied to one position per example, example i's
kernel gradient is the outer product a_i ⊗ δ_i, with δ_i = ∂ℓ_i/∂z_i, and its
bias gradient is δ_i. `factored_grads` returns, for each such `nnx.Linear`,
the kernel's per-example gradients as `OuterRows(a, δ)` ([B, d_in] and
[B, d_out]) instead of a [B, d_in, d_out] tensor. The order-statistics kernels
(`aggregators.order_stats`) compute row i as a_i[:, None] * δ_i[None, :]
inside their fused selection network, so the per-example tensor is never
materialized and XLA reads it in its natural layout (vmap's per-example kernel
gradients came out transposed, which made the network read them strided: 2x
slower).
For an `nnx.Conv`, example i's kernel gradient is patches(a_i)ᵀ δ_i
(`ghost_rules.conv_kernel_grads`): one batched matmul over the batch. vmap's
per-example conv gradient is instead a convolution with B feature groups,
which XLA:CPU canonicalizes for its fast kernels only in the entry
computation: inside `lax.scan` (the micro-batches of the streaming robust
gradients) it ran as a naive loop, 15x slower (benchmarks/README_aggregators.md).

How: one `jax.vmap` over examples of `jax.grad` of the example's loss with
respect to (every other param, a zero perturbation added to each hooked
layer's output). Each eligible module of the NNX model is intercepted for
that call (module_hooks.py): its input a is captured and the perturbation is
added to its output, so the perturbation's gradient is δ. The hooked kernels
themselves are not differentiated.

Eligible: exact `nnx.Linear` modules called once per loss on a [B, d_in]
input, and exact `nnx.Conv` modules called once on a [B, *spatial, c_in]
input without feature groups, mask or circular / reflect / causal padding;
in both cases with params used nowhere else. Every other param (grouped
convs, norm, embeddings, Linear layers on sequences, ...) gets ordinary
per-example gradients from the same vmapped pass. Losses that are not
`from_nnx` losses get plain per-example gradients.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax import _checks
from coherence_jax._tree import PyTree
from coherence_jax._tree import key_tuple
from coherence_jax.aggregators import order_stats
from coherence_jax.per_example import jaxpr_deps
from coherence_jax.per_example import module_hooks
from coherence_jax.per_example import nnx_bridge
from coherence_jax.per_example import vmap_grads
from coherence_jax.per_example.ghost import plan as ghost_plan
from coherence_jax.per_example.ghost import rules as ghost_rules


# Floats of conv patches formed at once (64 MiB of float32): a whole CNN batch
# of 128 in one matmul, a ResNet-50 stage-1 conv at 224x224 in chunks of ~8
# examples. Chunks cost compile time (a scan each: +0.3 s for the CNN at 16
# MiB), so this is larger than the ghost rules' budget.
PATCH_CHUNK_FLOATS = 1 << 24


@jax.tree_util.register_pytree_node_class
class OuterRows(order_stats.LazyRows):
  """Per-example kernel gradients a_i ⊗ d_i, i < B, as factors [B, d_in], [B, d_out]."""

  def __init__(self, a: jax.Array, d: jax.Array):
    self.a, self.d = a, d

  def tree_flatten(self):
    return (self.a, self.d), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(*children)

  @property
  def shape(self):
    return (self.a.shape[0], self.a.shape[1], self.d.shape[1])

  @property
  def dtype(self):
    return jnp.result_type(self.a, self.d)

  def row(self, i: int) -> jax.Array:
    return self.a[i][:, None] * self.d[i][None, :]

  def sum_rows(self) -> jax.Array:
    return jnp.matmul(self.a.T, self.d, precision=jax.lax.Precision.HIGHEST)

  def materialize(self) -> jax.Array:
    return self.a[:, :, None] * self.d[:, None, :]

  def __repr__(self):
    return f'OuterRows(a={self.a.shape}, d={self.d.shape})'


def is_outer(x) -> bool:
  return isinstance(x, OuterRows)


def _layers(loss_fn, params, batch, size):
  """The eligible nnx.Linear / nnx.Conv modules: two dicts keyed by path,
  -> their param names, and -> (shape, dtype) of their output.

  Eligible: called once per loss on an input with leading axis `size`, one
  position per example (Linear: [B, d_in]) or a plain conv (`conv_info`'s
  'gram_ok': no feature groups, mask or circular padding), params used
  nowhere else.
  """
  model = loss_fn.model(params)
  found = {path: tuple(n for n in ('kernel', 'bias')
                       if getattr(module, n, None) is not None)
           for path, module in nnx.iter_graph(model)
           if type(module) in (nnx.Linear, nnx.Conv)}  # pylint: disable=unidiomatic-typecheck
  if not found:
    return {}, {}
  calls = {path: [] for path in found}
  outputs = {}

  def traced(p_out, p_in, chunk):
    model = loss_fn.model(p_out)
    nodes = dict(nnx.iter_graph(model))

    def hook_for(path):
      def hook(module, base_call, args, kwargs):
        x = args[0] if args else None
        calls[path].append((getattr(x, 'shape', None), bool(kwargs)
                            or len(args) != 1))
        p = {n: module_hooks.get_path(p_in, path + (n,)) for n in found[path]}
        out = module_hooks.pure_apply(module, base_call, kwargs)(p, x)
        outputs[path] = (tuple(out.shape), out.dtype)
        return out
      return hook

    hooked = [(nodes[path], hook_for(path)) for path in found]
    with module_hooks.intercepted(hooked):
      return jnp.sum(loss_fn.loss(model, chunk))

  closed = jax.make_jaxpr(traced)(params, params, batch)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  tied = set()
  for i in jaxpr_deps.inputs_reaching_outputs(closed, len(flat)):
    path = key_tuple(flat[i][0])
    if path[:-1] in found:
      tied.add(path[:-1])
  nodes = dict(nnx.iter_graph(model))
  out = {}
  for path, names in found.items():
    seen = calls[path]
    if path in tied or len(seen) != 1:
      continue
    shape, extra = seen[0]
    if extra or shape is None or shape[0] != size:
      continue
    module = nodes[path]
    if isinstance(module, nnx.Conv):
      if (len(shape) != len(module.kernel_size) + 2
          or not ghost_plan.conv_info(module)['gram_ok']):
        continue
    elif len(shape) != 2:
      continue
    out[path] = names
  return out, {path: outputs[path] for path in out}


def _conv_kernel_grads(info, kernel_shape, x, d):
  """Per-example conv kernel gradients [B, *kernel_shape] from the inputs x
  and output cotangents d: patches (strided slices) times d, one batched
  matmul (see the module docstring). The patches are formed a chunk of
  examples at a time (`ghost_rules.over_example_chunks`, PATCH_CHUNK_FLOATS
  at a time), so their memory does not grow with B."""
  size = x.shape[0]
  d = d.reshape(size, -1, d.shape[-1])
  d_in = math.prod(kernel_shape[:-1])

  def part(x, d):
    return 0.0, ghost_rules.conv_kernel_grads(info, x, d.astype(jnp.float32))

  floats = d.shape[1] * (d_in + d.shape[2]) + d_in * d.shape[2]
  g = ghost_rules.over_example_chunks(part, (x, d), floats,
                                     PATCH_CHUNK_FLOATS)[1]
  return g.reshape((size,) + tuple(kernel_shape))


def factored_grads(loss_fn, params: PyTree, batch: PyTree) -> PyTree:
  """Per-example gradients, params-shaped, leading axis B; traceable.

  Kernels of eligible Dense layers are `OuterRows` (factored); every other
  leaf is a [B, *param.shape] array (conv kernels formed from the layer's
  input patches and output cotangents). Feed the result to the order_stats
  kernels or to the aggregators of aggregators.py (they accept OuterRows);
  `materialize_grads` expands it.
  """
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  # Inside jax.shard_map, gradients with respect to values invariant over the
  # batch's mesh axes come back summed over devices: make the params and the
  # perturbations vary like the batch, so each example's gradient is its own.
  params = order_stats.vary_like(params, batch)
  if not isinstance(loss_fn, nnx_bridge.NNXLossFn):
    return vmap_grads.vmapped_grads(loss_fn, params, batch)
  layers, outputs = _layers(loss_fn, params, batch, size)
  if not layers:
    return vmap_grads.vmapped_grads(loss_fn, params, batch)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [key_tuple(kp) for kp, _ in flat]
  leaves = [leaf for _, leaf in flat]
  is_hooked = [p[:-1] in layers and p[-1] in layers[p[:-1]] for p in paths]
  other = [leaf for leaf, h in zip(leaves, is_hooked) if not h]
  nodes = dict(nnx.iter_graph(loss_fn.model(params)))
  convs = {path: ghost_plan.conv_info(nodes[path]) for path in layers
           if isinstance(nodes[path], nnx.Conv)}

  def example_loss(other, eps, example):
    it = iter(other)
    full = [next(it) if not h else leaf for leaf, h in zip(leaves, is_hooked)]
    model = loss_fn.model(jax.tree_util.tree_unflatten(treedef, full))
    nodes = dict(nnx.iter_graph(model))
    captured = {}

    def hook_for(path):
      def hook(module, base_call, args, kwargs):
        captured[path] = args[0]
        return base_call(module, *args, **kwargs) + eps[path]
      return hook

    hooked = [(nodes[path], hook_for(path)) for path in layers]
    with module_hooks.intercepted(hooked):
      loss = loss_fn.loss(model, jax.tree.map(lambda x: x[None], example))[0]
    return loss, captured

  grad_fn = jax.grad(example_loss, argnums=(0, 1), has_aux=True)

  def example_grads(other, example):
    # The zero perturbation (the shape of the layer's output for one example)
    # is made per example inside vmap (not a [B, ...] input), so it takes the
    # batch's sharding on Explicit-axis meshes.
    eps = {path: jnp.zeros((1,) + shape[1:], dtype)
           for path, (shape, dtype) in outputs.items()}
    return grad_fn(other, order_stats.vary_like(eps, example), example)

  (g_other, g_eps), captured = jax.vmap(example_grads, in_axes=(None, 0))(
      other, batch)
  it = iter(g_other)
  result = []
  for path, leaf, hooked in zip(paths, leaves, is_hooked):
    if not hooked:
      result.append(next(it))
      continue
    layer = path[:-1]
    x, d = captured[layer][:, 0], g_eps[layer][:, 0]
    if path[-1] == 'bias':
      g = d.reshape(d.shape[0], -1, d.shape[-1]).sum(1)
      result.append(g.astype(leaf.dtype))
    elif layer in convs:
      result.append(_conv_kernel_grads(convs[layer], leaf.shape, x, d)
                    .astype(leaf.dtype))
    else:
      result.append(OuterRows(x, d.astype(x.dtype)))
  return jax.tree_util.tree_unflatten(treedef, result)


def materialize_grads(grads: PyTree) -> PyTree:
  """Expands the OuterRows leaves of `factored_grads`' result."""
  return jax.tree.map(order_stats.materialize, grads, is_leaf=is_outer)
