"""Per-example squared gradient norms without per-example gradients ("ghost norms").

Coherence needs S = Σ g_i (one ordinary backward pass) and Q = Σ ‖g_i‖². For a
layer z = a W (+ b) with T positions per example, example i's weight gradient
is A_iᵀ Δ_i (Δ_i the output cotangent), whose squared norm is ‖a_i‖² ‖δ_i‖² for
T = 1 (Goodfellow 2015), ⟨A_i A_iᵀ, Δ_i Δ_iᵀ⟩ (Gram form) or ‖A_iᵀ Δ_i‖² formed a
few examples at a time, whichever is cheaper per layer (Bu et al. 2022). The
loss is traced once (plan.py; linen.py for linen models), each layer's call is
routed through its rule (rules.py; reuse.py for layers called several times),
and one `jax.grad` of Σ_i ℓ_i, seeded with a power of two, yields S and every
per-example norm. Modules of one's own take the per-module fallback or a
registered rule (registry.py); a param no module rule covers takes vmap
(`method='auto'`), or is an error naming it (`method='ghost'`). `norm_paths`
lists which way each param takes.

How and why, with the measurements behind the choices: docs/design/ghost_norms.md.

References:
  I. Goodfellow, "Efficient Per-Example Gradient Computations", 2015.
  Z. Bu et al., "Scalable and Efficient Training of Large Convolutional
  Neural Networks with Differential Privacy", NeurIPS 2022 (mixed ghost norm).

Example (a param outside any supported layer: an error with method='ghost',
per-example vmap gradients for it with method='auto'):
  >>> class Tempered(nnx.Module):
  ...   def __init__(self, rngs):
  ...     self.dense = nnx.Linear(4, 2, rngs=rngs)
  ...     self.temperature = nnx.Param(jnp.ones(()))
  ...   def __call__(self, x):
  ...     return self.dense(x) / self.temperature
  >>> tempered_loss, tempered_params = from_nnx(
  ...     Tempered(nnx.Rngs(0)), lambda model, b: (model(b['x']) ** 2).sum(-1))
  >>> xs = {'x': jnp.arange(12.).reshape(3, 4)}
  >>> per_example_sq_norms(tempered_loss, tempered_params, xs, method='ghost')
  Traceback (most recent call last):
  ValueError: method='ghost' cannot compute per-example norms of these params:
    temperature: module '<root>' of type Tempered reads params of its own ...
  >>> q = per_example_sq_norms(tempered_loss, tempered_params, xs)  # 'auto'
  >>> q_vmap = per_example_sq_norms(tempered_loss, tempered_params, xs,
  ...                               method='vmap')
  >>> jax.tree.map(lambda a, b: bool(jnp.allclose(a, b, rtol=1e-4)), q, q_vmap)
  {'dense': {'bias': True, 'kernel': True}, 'temperature': True}
"""

from typing import Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax import _checks
from coherence_jax import microbatch
from coherence_jax import reductions
from coherence_jax import stats as stats_lib
from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree
from coherence_jax._tree import path_str
from coherence_jax.per_example import module_hooks
from coherence_jax.per_example import nnx_bridge
from coherence_jax.per_example import vmap_grads
from coherence_jax.per_example.ghost import linen as linen_ghost
from coherence_jax.per_example.ghost import plan as ghost_plan
from coherence_jax.per_example.ghost import reuse as ghost_reuse
from coherence_jax.per_example.ghost import rules as ghost_rules

# 'ghost': only ghost rules (unsupported params are an error); 'auto': ghost
# where possible, per-example vmap gradients elsewhere; 'vmap': vmap only.
METHODS = ('ghost', 'auto', 'vmap')


# ------------------------------------------------------------------ hooks
def _dtypes(params, path, layer):
  p = module_hooks.get_path(params, path)
  return {name: p[name].dtype for name in layer.params}


def _cast(p32, dtypes):
  return {name: p32[name].astype(dtypes[name]) for name in dtypes}


def _ghost_hook(layer, p32, dtypes, q_slots, top_level):
  """One call: the layer inside `ghost_rules.ghost_layer` (norms in backward)."""
  call = layer.calls[0]
  rule = ghost_rules.RULES[ghost_rules.rule_name(layer.kind, call.method)]
  def hook(module, base_call, args, kwargs):
    info = {**call.info, 'forms': layer.forms, 'module': module,
            'top_level': top_level}
    x, named = ghost_plan.split_args(base_call, module, args, kwargs)
    apply, undo = ghost_plan.example_first(
        info, module_hooks.pure_apply(module, base_call, named))
    if layer.inside:  # in jit / scan / remat: this call's values (slices)
      p = {name: ghost_rules.as_f32(getattr(module, name).get_value())
           for name in layer.params}
    else:  # float32 also for bfloat16 params: S accumulates in float32
      p = {name: p32[name] for name in layer.params}
    return undo(ghost_rules.ghost_layer(
        rule, info, lambda p, x: apply(_cast(p, dtypes), x), p, x, q_slots))
  return hook


def _capture_hook(layer, p32, dtypes, perturb, inputs):
  """k calls: each output gets a zero perturbation (its cotangent is dz_j)."""
  def hook(module, base_call, args, kwargs):
    x, named = ghost_plan.split_args(base_call, module, args, kwargs)
    apply, undo = ghost_plan.example_first(
        layer.calls[len(inputs)].info,
        module_hooks.pure_apply(module, base_call, named))
    p = jax.lax.stop_gradient({name: p32[name] for name in layer.params})
    z = apply(_cast(p, dtypes), x) + perturb[len(inputs)]
    inputs.append(x)
    return undo(z)
  return hook


# ---------------------------------------------------------- the computation
def _not_nnx_error(loss_fn):
  return ValueError(
      f"loss_fn: method='ghost' needs the model's layers, but found no flax "
      f'layer in {type(loss_fn).__name__}; build loss_fn with '
      'coherence_jax.from_nnx(model, loss) or apply a flax.linen model in it, '
      "or pass method='auto' or 'vmap' to use per-example gradients instead.")


def _unsupported_error(bad):
  causes = {}
  for path, reason in sorted(bad.items(), key=lambda kv: path_str(kv[0])):
    causes.setdefault(reason, []).append(path_str(path))
  lines = '\n  '.join(f'{", ".join(paths)}: {reason}'
                      for reason, paths in causes.items())
  return ValueError(
      "method='ghost' cannot compute per-example norms of these params:\n  "
      f"{lines}\nKnown: {ghost_plan.SUPPORTED_NAMES}, and any module without "
      "param-holding submodules. Register a rule for your layer "
      "(coherence_jax.register_ghost_rule), call the layer directly in the "
      "loss, or pass method='auto' (vmap for these params) or 'vmap'.")


def scaled_sum_and_sq_norms(loss_fn, params, chunk, *, method: str = 'auto',
                            ghost_form: Optional[str] = None,
                            axis_name: mesh_axes.AxisName = None,
                            top_level: bool = False):
  """(S, per-example squared norms in units of scale², scale) of one chunk.

  One backward pass seeded with a power of two (`loss_seed`), so the norms
  hold at any loss scale; `scale` is its inverse. `loss_fn` comes from `from_nnx`; params must already be varying over
  `axis_name` (see `mesh_axes.as_varying`). With method='ghost' unsupported
  params are a ValueError naming them; 'auto' uses vmap for them. Traceable;
  no micro-batching and no input checks (see `per_example_sq_norms`).

  Args:
    loss_fn: an `NNXLossFn` from `from_nnx`.
    params: its params (a nested dict of float arrays).
    chunk: pytree of arrays with a shared leading example axis B.
    method: 'ghost' or 'auto'.
    ghost_form: None, 'gram' or 'materialize' (see `ghost_rules.choose_form`).
    axis_name: the mesh axis the chunk is sharded over, or None.
    top_level: True where the pass runs in no loop (no micro-batch scan):
      conv layers may then take vmap's per-example gradients.

  Returns:
    A `GhostPass`: S = Σ_i ∇ℓ_i (params-shaped, float32), a params-shaped
    pytree of float32 [B] per-example squared norms ‖g_i‖² / scale², the
    power of two `scale`, and the per-example losses.

  Raises:
    ValueError: with method='ghost', params no ghost rule handles (each
      named with the reason).

  Example:
    >>> out = jax.eval_shape(
    ...     lambda p, b: scaled_sum_and_sq_norms(loss_fn, p, b), params, batch)
    >>> out.sum_grads['layers'][0]['kernel'].shape, out.losses.shape
    ((784, 32), (16,))
  """
  size = _checks.batch_size(chunk)
  plan = _plan_of(loss_fn, params, chunk, size, ghost_form, method)
  if plan.whole_vmap_is_cheaper(params, size) or not plan.good():
    return _all_by_vmap(loss_fn, params, chunk)
  if plan.linen:
    return _linen_pass(loss_fn, params, chunk, plan, axis_name, top_level)
  good = plan.good()
  once = {p: l for p, l in good.items() if len(l.calls) <= 1}
  reused = {p: l for p, l in good.items() if len(l.calls) > 1}
  slots = mesh_axes.as_varying(
      {l.key: {n: jnp.zeros((size,), jnp.float32) for n in l.params}
       for l in once.values()}, axis_name)
  perturb = mesh_axes.as_varying(
      {l.key: [jnp.zeros(c.z_shape, c.z_dtype) for c in l.calls]
       for l in reused.values()}, axis_name)
  p32 = jax.tree.map(ghost_rules.as_f32, params)

  def total_loss(p32, slots, perturb):
    model = loss_fn.model(jax.tree.map(lambda v, ref: v.astype(ref.dtype),
                                       p32, params))
    nodes = dict(nnx.iter_graph(model))
    inputs = {l.key: [] for l in reused.values()}
    hooked = []
    for path, layer in once.items():
      if not layer.calls:  # never called: zero norms, zero S
        continue
      hooked.append((nodes[path], _ghost_hook(
          layer, module_hooks.get_path(p32, path),
          _dtypes(params, path, layer), slots[layer.key], top_level)))
    for path, layer in reused.items():
      hooked.append((nodes[path], _capture_hook(
          layer, module_hooks.get_path(p32, path),
          _dtypes(params, path, layer), perturb[layer.key],
          inputs[layer.key])))
    with module_hooks.intercepted(hooked, ghost_plan.METHODS):
      losses = loss_fn.loss(model, chunk)
    seed = loss_seed(losses)
    return jnp.sum(losses) * seed, (inputs, seed, losses)

  (sum_grads, norms, dzs), (inputs, seed, losses) = jax.grad(
      total_loss, argnums=(0, 1, 2), has_aux=True)(p32, slots, perturb)
  reused_sums = {}
  if reused:
    nodes = dict(nnx.iter_graph(loss_fn.model(params)))
    for path, layer in reused.items():
      module = nodes[path]
      applies = [ghost_plan.example_first(c.info, module_hooks.pure_apply(
          module, getattr(type(module), c.method), c.kwargs))[0]
                 for c in layer.calls]
      p = {n: v for n, v in module_hooks.get_path(p32, path).items()
           if n in layer.params}
      reused_sums[layer.key], norms[layer.key] = ghost_reuse.reused_layer(
          layer, applies, p, inputs[layer.key], dzs[layer.key])
  return _assembled(loss_fn, params, chunk, plan, sum_grads, norms,
                    reused_sums, seed, losses)


def _plan_of(loss_fn, params, chunk, size, ghost_form, method):
  """The NNX or linen plan; with method='ghost', raises on any fallback."""
  plan = None
  if nnx_bridge.is_nnx_loss(loss_fn):
    plan = ghost_plan.plan(loss_fn, params, chunk, size, ghost_form)
  if plan is None or not plan.good():  # linen inside (nnx.bridge.ToNNX)?
    linen = linen_ghost.plan(loss_fn, params, chunk, size, ghost_form)
    plan = linen if plan is None or linen.layers else plan
    if method == 'ghost' and not plan.layers:
      raise _not_nnx_error(loss_fn)
  bad = plan.fallback()
  if bad and method == 'ghost':
    raise _unsupported_error(bad)
  return plan


def _linen_pass(loss_fn, params, chunk, plan, axis_name,
                top_level) -> 'GhostPass':
  """The one ghost backward pass of a loss that applies linen layers."""
  size = _checks.batch_size(chunk)
  good = plan.good()
  slots = mesh_axes.as_varying(
      {l.key: {n: jnp.zeros((size,), jnp.float32) for n in l.params}
       for l in good.values()}, axis_name)
  p32 = jax.tree.map(ghost_rules.as_f32, params)

  def total_loss(p32, slots):
    p = jax.tree.map(lambda v, ref: v.astype(ref.dtype), p32, params)
    with linen_ghost.hooked(good, slots, top_level):
      losses = loss_fn(p, chunk)
    seed = loss_seed(losses)
    return jnp.sum(losses) * seed, (seed, losses)

  (sum_grads, norms), (seed, losses) = jax.grad(
      total_loss, argnums=(0, 1), has_aux=True)(p32, slots)
  return _assembled(loss_fn, params, chunk, plan, sum_grads, norms, {}, seed,
                    losses)


def _assembled(loss_fn, params, chunk, plan, sum_grads, norms, reused_sums,
               seed, losses) -> 'GhostPass':
  """The GhostPass: per leaf, S and norms from its rule or from vmap."""
  good = plan.good()
  fallback = _vmap_norms(loss_fn, params, chunk, set(plan.fallback()), seed)
  treedef = jax.tree_util.tree_structure(params)
  out, sums = [], []
  for path, s in zip(ghost_plan.leaf_paths(params),
                     jax.tree_util.tree_leaves(sum_grads)):
    layer = good.get(path[:-1])
    sums.append(reused_sums[layer.key][path[-1]] if layer is not None and
                layer.key in reused_sums else s)
    if path in fallback:
      out.append(fallback[path])
    else:
      out.append(norms[layer.key][path[-1]])
  sums = [ghost_rules.as_f32(s) / seed for s in sums]
  return GhostPass(jax.tree_util.tree_unflatten(treedef, sums),
                   jax.tree_util.tree_unflatten(treedef, out), 1.0 / seed,
                   losses)


class GhostPass(NamedTuple):
  """What one ghost backward pass returns (`scaled_sum_and_sq_norms`).

  Attributes:
    sum_grads: S = Σ_i ∇ℓ_i, params-shaped, float32.
    sq_norms: per leaf, float32 [B] per-example squared norms / scale².
    scale: a float32 power of two.
    losses: the per-example losses [B] of the same forward pass.
  """
  sum_grads: PyTree
  sq_norms: PyTree
  scale: jax.Array
  losses: jax.Array


def loss_seed(losses: jax.Array) -> jax.Array:
  """A power of two near 1 / max_i |ℓ_i|, to seed the backward pass with.

  Per-example gradients scale with the loss, so seeding the backward pass
  with it (exact: a power of two) keeps every gradient, cotangent and
  squared norm near 1 whatever the loss scale (1e-30 to 1e30), where float32
  squares would underflow or overflow. 1 when no loss is finite and nonzero.

  Args:
    losses: the per-example losses [B].

  Returns:
    A float32 power of two (not differentiated).

  Example:
    >>> float(loss_seed(jnp.array([3e-30, -1e-30]))) == 2.0 ** 99
    True
    >>> float(loss_seed(jnp.array([0.0, jnp.nan])))
    1.0
  """
  m = jnp.max(jnp.abs(ghost_rules.as_f32(losses)))
  m = jnp.where(jnp.isfinite(m) & (m > 0), m, 1.0)
  _, exponent = jnp.frexp(m)
  return jax.lax.stop_gradient(
      jnp.ldexp(jnp.float32(1.0), jnp.clip(1 - exponent, -126, 126)))


def sum_and_sq_norms(loss_fn, params, chunk, *, method: str = 'auto',
                     ghost_form: Optional[str] = None,
                     axis_name: mesh_axes.AxisName = None):
  """(S, per-example squared norms per leaf [B]) of one chunk, by ghost norms.

  The plain-unit form of `scaled_sum_and_sq_norms` (norms overflow float32
  for per-example gradients above ~1.8e19 and underflow below ~1e-19; the
  coherence statistics use the scaled form and hold at any scale).

  Example:
    >>> s, q = jax.eval_shape(lambda p, b: sum_and_sq_norms(loss_fn, p, b),
    ...                       params, batch)
    >>> s['layers'][0]['kernel'].shape, q['layers'][0]['kernel'].shape
    ((784, 32), (16,))
  """
  out = scaled_sum_and_sq_norms(loss_fn, params, chunk, method=method,
                                ghost_form=ghost_form, axis_name=axis_name)
  return out.sum_grads, jax.tree.map(lambda q: q * out.scale * out.scale,
                                     out.sq_norms)


def norm_paths(loss_fn, params, batch, *, method: str = 'auto',
               ghost_form: Optional[str] = None) -> Dict[str, str]:
  """How each param's per-example norms are computed: {path: way}.

  Ways: 'ghost:outer' (‖a‖²‖δ‖², one position), 'ghost:gram' (Gram matrices
  over positions, and over calls for shared weights), 'ghost:materialize'
  (per-example gradients of that layer only, a few examples at a time),
  'ghost:unused' (a supported layer the loss never calls: zero), 'vmap'
  (per-example gradients of the whole loss; method='ghost' raises with the
  reason instead).

  Args:
    loss_fn: the loss (ghost rules need one from `from_nnx`).
    params: its params.
    batch: a batch (only shapes matter; nothing is computed).
    method: 'auto', 'ghost' or 'vmap', as for `per_example_sq_norms`.
    ghost_form: None, 'gram' or 'materialize'.

  Returns:
    {param path ('layers/0/kernel'): way}, in the params' flattening order.

  Raises:
    ValueError: a bad method or form; method='ghost' with params that have
      no ghost rule (each named with the reason).

  Example:
    >>> norm_paths(loss_fn, params, batch)   # from_nnx(MLP(...))
    {'layers/0/bias': 'ghost:materialize', 'layers/0/kernel': 'ghost:outer', \
'layers/1/bias': 'ghost:materialize', 'layers/1/kernel': 'ghost:outer'}
  """
  check_ghost_args(loss_fn, method, ghost_form)
  paths = ghost_plan.leaf_paths(params)
  if not uses_ghost(loss_fn, method):
    return {path_str(p): 'vmap' for p in paths}
  size = _checks.batch_size(batch)
  plan = _plan_of(loss_fn, params, batch, size, ghost_form, method)
  bad = plan.fallback()
  if plan.whole_vmap_is_cheaper(params, size) or not plan.good():
    return {path_str(p): 'vmap' for p in paths}
  return {path_str(p): 'vmap' if p in bad else
          'ghost:' + plan.layers[p[:-1]].forms[p[-1]] for p in paths}


def _all_by_vmap(loss_fn, params, chunk) -> 'GhostPass':
  """The `GhostPass` outputs from per-example vmap gradients of all."""
  one = vmap_grads.single_example_loss(loss_fn)
  losses, grads = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0))(
      params, chunk)
  grads = jax.tree.map(ghost_rules.as_f32, grads)
  scale = stats_lib.power_of_two_above(stats_lib.max_abs(grads))
  scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)
  return GhostPass(
      jax.tree.map(reductions.sum_over_examples, grads),
      jax.tree.map(lambda g: reductions.per_example_sq_norm(g / scale), grads),
      scale, losses)


def _vmap_norms(loss_fn, params, chunk, paths,
                seed) -> Dict[tuple, jax.Array]:
  """Per-example squared norms × seed² of the params at `paths`, by vmap."""
  if not paths:
    return {}
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = ghost_plan.leaf_paths(params)
  idx = [i for i, key in enumerate(keys) if key in paths]
  one = vmap_grads.single_example_loss(loss_fn)

  def loss_of(sub, example):
    full = list(leaves)
    for i, v in zip(idx, sub):
      full[i] = v
    return one(jax.tree_util.tree_unflatten(treedef, full), example)

  grads = jax.vmap(jax.grad(loss_of), in_axes=(None, 0))(
      [leaves[i] for i in idx], chunk)
  return {keys[i]: reductions.per_example_sq_norm(ghost_rules.as_f32(g) * seed)
          for i, g in zip(idx, grads)}


def check_ghost_args(loss_fn, method: str, ghost_form: Optional[str]) -> None:
  """Validates `method` and `ghost_form` for a ghost-capable function.

  Args:
    loss_fn: the loss; method='ghost' needs one from `from_nnx`.
    method: one of METHODS ('ghost', 'auto', 'vmap').
    ghost_form: None, 'gram' or 'materialize'.

  Raises:
    ValueError: an unknown method or form.

  Example:
    >>> check_ghost_args(loss_fn, 'ghost', None)
    >>> check_ghost_args(loss_fn, 'auto', 'outer')
    Traceback (most recent call last):
    ValueError: ghost_form: got 'outer'; pass None (cheapest per layer), ...
  """
  del loss_fn  # a loss without flax layers is refused by the plan
  _checks.check_method(method, METHODS)
  ghost_rules.check_form(ghost_form)


def uses_ghost(loss_fn, method: str) -> bool:
  """Whether `method` computes norms by ghost rules for this loss_fn.

  Args:
    loss_fn: the loss.
    method: one of METHODS.

  Returns:
    True for 'ghost' / 'auto' (an NNX loss from `from_nnx`, or any loss
    whose linen layers the plan finds; without layers the pass is by vmap).

  Example:
    >>> uses_ghost(loss_fn, 'auto'), uses_ghost(loss_fn, 'vmap')
    (True, False)
  """
  del loss_fn
  return method != 'vmap'


def per_example_sq_norms(loss_fn, params, batch, *, method: str = 'auto',
                         microbatch_size: Optional[int] = None,
                         axis_name: mesh_axes.AxisName = None,
                         ghost_form: Optional[str] = None) -> PyTree:
  """‖∇ℓ_i‖² per param leaf and example: a params-shaped pytree of [B] arrays.

  Summing the leaves gives each example's total squared gradient norm.

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`; from `from_nnx` for ghost norms.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis B.
    method: 'ghost' computes the norms from one backward pass without forming
      per-example gradients (unsupported layers are a ValueError naming them);
      'auto' does the same and uses per-example vmap gradients for whatever
      ghost cannot handle (everything, if loss_fn is not from `from_nnx`);
      'vmap' always uses per-example gradients.
    microbatch_size: examples processed at once; None: all at once.
    axis_name: inside `jax.shard_map` / `jax.pmap` with the batch sharded,
      the mesh axis; each device returns its own examples' norms.
    ghost_form: None picks the cheaper ghost form per layer; 'gram' or
      'materialize' forces one where it applies (tests, benchmarks).

  Returns:
    A params-shaped pytree of float32 [B] arrays: squares of float32, so
    finite for per-example gradient norms between ~1e-19 and ~1.8e19
    (`coherence_stats` keeps Q in scaled units and holds at any scale).

  Raises:
    ValueError: a bad method / form / microbatch_size, method='ghost' with a
      loss not from `from_nnx` or with params no ghost rule handles, a loss
      that is not per-example, an empty batch, or a sharded batch without
      `axis_name`.

  Example:
    >>> q = per_example_sq_norms(loss_fn, params, batch)   # from_nnx(MLP(...))
    >>> q['layers'][0]['kernel'].shape, q['layers'][0]['kernel'].dtype
    ((16,), dtype('float32'))
    >>> g = per_example_grads(loss_fn, params, batch)
    >>> g_sq = (g['layers'][0]['kernel'] ** 2).sum((1, 2))
    >>> bool(jnp.allclose(q['layers'][0]['kernel'], g_sq, rtol=1e-4))
    True
  """
  check_ghost_args(loss_fn, method, ghost_form)
  size = _checks.check_per_example_loss(loss_fn, params, batch)
  mesh_axes.check_axis_name(axis_name, batch)
  params = mesh_axes.as_varying(params, axis_name)
  if uses_ghost(loss_fn, method):
    top_level = microbatch_size is None or microbatch_size >= size

    def one_chunk(chunk):
      out = scaled_sum_and_sq_norms(
          loss_fn, params, chunk, method=method, ghost_form=ghost_form,
          axis_name=axis_name, top_level=top_level)
      return jax.tree.map(lambda q: q * out.scale * out.scale, out.sq_norms)
  else:
    def one_chunk(chunk):
      grads = vmap_grads.vmapped_grads(loss_fn, params, chunk)
      return jax.tree.map(
          lambda g: reductions.per_example_sq_norm(ghost_rules.as_f32(g)),
          grads)
  return microbatch.microbatched(one_chunk, batch, microbatch_size,
                                 combine='concat')
