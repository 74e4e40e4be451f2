"""Per-example squared gradient norms without per-example gradients ("ghost norms").

Coherence needs S = Σ g_i, which is one ordinary backward pass, and
Q = Σ ‖g_i‖². For a layer z = a W (+ b) with T positions per example
(sequence steps, or conv output pixels after im2col), example i's weight
gradient is A_iᵀ Δ_i, where Δ_i = ∂ℓ_i/∂z_i is the layer's output cotangent:
  T = 1:       ‖a_i‖² ‖δ_i‖²                              (Goodfellow 2015)
  T > 1:       ⟨A_i A_iᵀ, Δ_i Δ_iᵀ⟩, O(T²(d_in + d_out))    ('gram')
           or  ‖A_iᵀ Δ_i‖², O(T d_in d_out)                ('materialize')
whichever is cheaper per layer (Bu et al. 2022, "mixed ghost norm"). Where a
layer's per-example weight gradients are materialized, their sum is the
layer's batch gradient, so it is not computed a second time. Materialized
gradients are formed a few examples at a time (`lax.map`), so memory stays at
about that of the plain gradient; conv patches come from strided slices.

How it works: inside the traced loss, each supported module of the merged NNX
model is switched, for that call only, to a subclass whose `__call__` wraps
the original in a `jax.custom_vjp`. Its forward is the module's own
`__call__`; its backward receives Δ for the whole batch, returns the usual
input and weight cotangents, and returns the per-example squared norms as the
cotangent of a dummy zero input of shape [B] (one per parameter). One
`jax.grad` of Σ_i ℓ_i then yields S and every per-example norm at about the
cost of one training step, with memory independent of B × #params.

Supported layers (exact types): nnx.Linear (any leading position axes),
nnx.Conv (strides, padding, dilations; Gram form for feature_group_count=1
without a mask, per-layer per-example gradients otherwise), nnx.Embed
(token-equality Gram), and the scale/bias of nnx.LayerNorm, GroupNorm, RMSNorm
and BatchNorm in inference mode (per-layer per-example gradients: cheap).
Each supported layer must be called once per loss evaluation, on inputs with
a leading example axis, and its params must not be used elsewhere (e.g.
`Embed.attend` weight tying). Anything else is reported by name with
method='ghost'; method='auto' computes those params' per-example gradients
with `jax.vmap` instead.

Files: this one plans (which layers, checks) and computes; the per-layer math
is in ghost_rules.py, the module interception in module_hooks.py, the
dataflow check for shared params in jaxpr_deps.py.

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
    temperature: module '<root>' of type Tempered holds param 'temperature' ...
  >>> q = per_example_sq_norms(tempered_loss, tempered_params, xs)  # 'auto'
  >>> q_vmap = per_example_sq_norms(tempered_loss, tempered_params, xs,
  ...                               method='vmap')
  >>> jax.tree.map(lambda a, b: bool(jnp.allclose(a, b, rtol=1e-4)), q, q_vmap)
  {'dense': {'bias': True, 'kernel': True}, 'temperature': True}
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import linear as nnx_linear

from coherence_jax import _checks
from coherence_jax import microbatch
from coherence_jax import reductions
from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree
from coherence_jax._tree import key_tuple
from coherence_jax._tree import path_str
from coherence_jax.per_example import ghost_rules
from coherence_jax.per_example import jaxpr_deps
from coherence_jax.per_example import module_hooks
from coherence_jax.per_example import nnx_bridge
from coherence_jax.per_example import vmap_grads

# 'ghost': only ghost rules (unsupported params are an error); 'auto': ghost
# where possible, per-example vmap gradients elsewhere; 'vmap': vmap only.
METHODS = ('ghost', 'auto', 'vmap')

_KINDS = {
    nnx.Linear: 'linear',
    nnx.Conv: 'conv',
    nnx.Embed: 'embed',
    nnx.LayerNorm: 'norm',
    nnx.GroupNorm: 'norm',
    nnx.RMSNorm: 'norm',
    nnx.BatchNorm: 'norm',
}
_PARAM_NAMES = {
    'linear': ('kernel', 'bias'),
    'conv': ('kernel', 'bias'),
    'embed': ('embedding',),
    'norm': ('scale', 'bias'),
}
# Keyword arguments a supported call may carry, with the values allowed.
_ALLOWED_KWARGS = {'out_sharding': (None,), 'mask': (None,),
                   'use_running_average': (None, True)}
_SUPPORTED_NAMES = ('Linear, Conv, Embed, LayerNorm, GroupNorm, RMSNorm, '
                    'BatchNorm (inference mode)')

# -------------------------------------------------------------- the plan
@dataclasses.dataclass
class _Layer:
  path: Tuple[Any, ...]
  kind: str
  params: Tuple[str, ...] = ()
  calls: int = 0
  problem: Optional[str] = None

  @property
  def key(self) -> str:
    return path_str(self.path)

  def flag(self, problem: str) -> None:
    if self.problem is None:
      self.problem = problem


def _inventory(model) -> Tuple[Dict[tuple, _Layer], Dict[tuple, str]]:
  """Supported layers by module path, and reasons for every other param."""
  nodes = dict(nnx.iter_graph(model))
  layers: Dict[tuple, _Layer] = {}
  unsupported: Dict[tuple, str] = {}
  for path, node in nodes.items():
    if not isinstance(node, nnx.Param):
      continue
    owner_path, name = tuple(path[:-1]), path[-1]
    owner = nodes.get(owner_path)
    kind = _KINDS.get(type(owner))
    if kind is not None and name in _PARAM_NAMES[kind]:
      layer = layers.setdefault(owner_path, _Layer(owner_path, kind))
      layer.params += (name,)
    else:
      unsupported[tuple(path)] = (
          f'module {path_str(owner_path)!r} of type {type(owner).__name__} '
          f'holds param {name!r} and has no ghost rule (supported: '
          f'{_SUPPORTED_NAMES})')
  return layers, unsupported


def _layer_info(module, kind, form) -> Dict[str, Any]:
  if kind != 'conv':
    return {'num_embeddings': getattr(module, 'num_embeddings', None),
            'form': form}
  nd = len(module.kernel_size)

  def bcast(v):
    v = 1 if v is None else v
    return (v,) * nd if isinstance(v, int) else tuple(v)

  padding = nnx_linear.canonicalize_padding(module.padding, nd)
  standard = not (isinstance(padding, str)
                  and padding in ('CIRCULAR', 'REFLECT', 'CAUSAL'))
  return {'kernel_size': tuple(module.kernel_size),
          'strides': bcast(module.strides),
          'input_dilation': bcast(module.input_dilation),
          'kernel_dilation': bcast(module.kernel_dilation),
          'padding': padding,
          'gram_ok': (standard and module.feature_group_count == 1
                      and module.mask is None),
          'form': form}


def _call_problem(layer, module, args, kwargs, size) -> Optional[str]:
  if len(args) != 1:
    return f'called with {len(args)} positional arguments (expected 1)'
  for k, v in kwargs.items():
    if k not in _ALLOWED_KWARGS or not any(v is a for a in _ALLOWED_KWARGS[k]):
      return f'called with keyword argument {k}={v!r}'
  x = args[0]
  shape = getattr(x, 'shape', ())
  if not shape or shape[0] != size:
    return (f'input of shape {shape} has no leading example axis of size '
            f'{size}')
  if layer.kind == 'conv' and len(shape) < len(module.kernel_size) + 2:
    return f'input of shape {shape} has no batch axis'
  if isinstance(module, nnx.BatchNorm) and not (
      kwargs.get('use_running_average') or module.use_running_average):
    return ('BatchNorm in training mode couples the examples of a batch; run '
            'the model in inference mode (model.eval(), as from_nnx does)')
  return None


def _plan(loss_fn, params, chunk, size) -> Tuple[Dict[tuple, _Layer],
                                                  Dict[tuple, str]]:
  """Traces the loss once to find which layers ghost can handle.

  Returns (layers, unsupported): every supported layer (with `problem` set when
  it cannot be handled after all) and a reason per unsupported param path.
  """
  layers, unsupported = _inventory(loss_fn.model(params))

  def traced(p_out, p_in, chunk):
    model = loss_fn.model(p_out)
    nodes = dict(nnx.iter_graph(model))
    hooked = []
    for path, layer in layers.items():
      module = nodes[path]
      p_layer = module_hooks.get_path(p_in, path)
      hooked.append((module, _plan_hook(layer, p_layer, size)))
    with module_hooks.intercepted(hooked):
      return jnp.sum(loss_fn.loss(model, chunk))

  for layer in layers.values():
    layer.calls, layer.problem = 0, None
  closed = jax.make_jaxpr(traced)(params, params, chunk)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  owner = {}
  for i, (kpath, _) in enumerate(flat):
    path = key_tuple(kpath)
    if path[:-1] in layers:
      owner[i] = layers[path[:-1]]
  for i in jaxpr_deps.inputs_reaching_outputs(closed, len(flat)):
    if i in owner:
      owner[i].flag("its params are also used outside the layer's __call__ "
                    '(e.g. weight tying via Embed.attend)')
  for layer in layers.values():
    if layer.calls > 1:
      layer.flag(f'called {layer.calls} times per loss (shared weights); '
                 'ghost norms need one call per layer')
  return layers, unsupported


def _plan_hook(layer, p_in, size):
  def hook(module, base_call, args, kwargs):
    layer.calls += 1
    problem = _call_problem(layer, module, args, kwargs, size)
    if problem is not None:
      layer.flag(problem)
      return base_call(module, *args, **kwargs)
    p = {name: p_in[name] for name in layer.params}
    z = module_hooks.pure_apply(module, base_call, kwargs)(p, args[0])
    if getattr(z, 'shape', ())[:1] != (size,):
      layer.flag(f'output of shape {getattr(z, "shape", ())} has no leading '
                 f'example axis of size {size}')
    return z
  return hook


def _run_hook(layer, q_slots, form):
  rule = ghost_rules.RULES[layer.kind]

  def hook(module, base_call, args, kwargs):
    p = {name: getattr(module, name)[...] for name in layer.params}
    apply = module_hooks.pure_apply(module, base_call, kwargs)
    info = _layer_info(module, layer.kind, form)
    return ghost_rules.ghost_layer(rule, info, apply, p, args[0], q_slots)
  return hook


# ---------------------------------------------------------- the computation
def _not_nnx_error(loss_fn):
  return ValueError(
      f"loss_fn: method='ghost' needs the model's layers, but got "
      f'{type(loss_fn).__name__}; build loss_fn with coherence_jax.from_nnx('
      "model, loss), or pass method='auto' or 'vmap' to use per-example "
      'gradients instead.')


def sum_and_sq_norms(loss_fn, params, chunk, *, method: str = 'auto',
                     ghost_form: Optional[str] = None,
                     axis_name: mesh_axes.AxisName = None):
  """(S, per-example squared norms per leaf [B]) of one chunk, by ghost norms.

  `loss_fn` comes from `from_nnx`; params must already be varying over
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

  Returns:
    `(sum_grads, sq_norms)`: S = Σ_i ∇ℓ_i (params-shaped, float32) and a
    params-shaped pytree of float32 [B] per-example squared norms.

  Raises:
    ValueError: with method='ghost', params no ghost rule handles (each
      named with the reason).

  Example:
    >>> s, q = jax.eval_shape(lambda p, b: sum_and_sq_norms(loss_fn, p, b),
    ...                       params, batch)
    >>> s['layers'][0]['kernel'].shape, q['layers'][0]['kernel'].shape
    ((784, 32), (16,))
  """
  size = _checks.batch_size(chunk)
  layers, unsupported = _plan(loss_fn, params, chunk, size)
  bad = dict(unsupported)
  for layer in layers.values():
    if layer.problem is not None:
      for name in layer.params:
        bad[layer.path + (name,)] = (
            f'layer {layer.key!r} ({layer.kind}) {layer.problem}')
  if bad and method == 'ghost':
    lines = '\n  '.join(f'{path_str(p)}: {r}' for p, r in sorted(
        bad.items(), key=lambda kv: path_str(kv[0])))
    raise ValueError(
        "method='ghost' cannot compute per-example norms of these params:\n  "
        f"{lines}\nPass method='auto' to use per-example vmap gradients for "
        "them, or method='vmap'.")
  good = {p: l for p, l in layers.items() if l.problem is None}
  slots = mesh_axes.as_varying(
      {l.key: {n: jnp.zeros((size,), jnp.float32) for n in l.params}
       for l in good.values()}, axis_name)

  def total_loss(p, q):
    model = loss_fn.model(p)
    nodes = dict(nnx.iter_graph(model))
    hooked = [(nodes[path], _run_hook(layer, q[layer.key], ghost_form))
              for path, layer in good.items()]
    with module_hooks.intercepted(hooked):
      return jnp.sum(loss_fn.loss(model, chunk))

  sum_grads, norms = jax.grad(total_loss, argnums=(0, 1))(params, slots)
  fallback = _vmap_norms(loss_fn, params, chunk, set(bad))
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for kpath, _ in flat:
    path = key_tuple(kpath)
    if path in fallback:
      out.append(fallback[path])
    else:
      layer = good[path[:-1]]
      out.append(norms[layer.key][path[-1]])
  sum_grads = jax.tree.map(ghost_rules.as_f32, sum_grads)
  return sum_grads, jax.tree_util.tree_unflatten(treedef, out)


def _vmap_norms(loss_fn, params, chunk, paths) -> Dict[tuple, jax.Array]:
  """Per-example squared norms of the params at `paths`, by vmap."""
  if not paths:
    return {}
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [leaf for _, leaf in flat]
  keys = [key_tuple(kpath) for kpath, _ in flat]
  idx = [i for i, key in enumerate(keys) if key in paths]
  one = vmap_grads.single_example_loss(loss_fn)

  def loss_of(sub, example):
    full = list(leaves)
    for i, v in zip(idx, sub):
      full[i] = v
    return one(jax.tree_util.tree_unflatten(treedef, full), example)

  grads = jax.vmap(jax.grad(loss_of), in_axes=(None, 0))(
      [leaves[i] for i in idx], chunk)
  return {keys[i]: reductions.per_example_sq_norm(ghost_rules.as_f32(g))
          for i, g in zip(idx, grads)}


def check_ghost_args(loss_fn, method: str, ghost_form: Optional[str]) -> None:
  """Validates `method` and `ghost_form` for a ghost-capable function.

  Args:
    loss_fn: the loss; method='ghost' needs one from `from_nnx`.
    method: one of METHODS ('ghost', 'auto', 'vmap').
    ghost_form: None, 'gram' or 'materialize'.

  Raises:
    ValueError: an unknown method or form, or method='ghost' with a loss
      that is not from `from_nnx`.

  Example:
    >>> check_ghost_args(loss_fn, 'ghost', None)
    >>> check_ghost_args(lambda p, b: b['x'] @ p, 'ghost', None)
    Traceback (most recent call last):
    ValueError: loss_fn: method='ghost' needs the model's layers, but got ...
    >>> check_ghost_args(loss_fn, 'auto', 'outer')
    Traceback (most recent call last):
    ValueError: ghost_form: got 'outer'; pass None (cheapest per layer), ...
  """
  _checks.check_method(method, METHODS)
  ghost_rules.check_form(ghost_form)
  if method == 'ghost' and not nnx_bridge.is_nnx_loss(loss_fn):
    raise _not_nnx_error(loss_fn)


def uses_ghost(loss_fn, method: str) -> bool:
  """Whether `method` computes norms by ghost rules for this loss_fn.

  Args:
    loss_fn: the loss.
    method: one of METHODS.

  Returns:
    True for 'ghost' / 'auto' with a loss from `from_nnx`, else False.

  Example:
    >>> uses_ghost(loss_fn, 'auto'), uses_ghost(loss_fn, 'vmap')
    (True, False)
    >>> uses_ghost(lambda p, b: b['x'] @ p, 'auto')
    False
  """
  return method != 'vmap' and nnx_bridge.is_nnx_loss(loss_fn)


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
    A params-shaped pytree of float32 [B] arrays.

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
  _checks.check_per_example_loss(loss_fn, params, batch)
  mesh_axes.check_axis_name(axis_name, batch)
  params = mesh_axes.as_varying(params, axis_name)
  if uses_ghost(loss_fn, method):
    def one_chunk(chunk):
      return sum_and_sq_norms(loss_fn, params, chunk, method=method,
                              ghost_form=ghost_form, axis_name=axis_name)[1]
  else:
    def one_chunk(chunk):
      grads = vmap_grads.vmapped_grads(loss_fn, params, chunk)
      return jax.tree.map(
          lambda g: reductions.per_example_sq_norm(ghost_rules.as_f32(g)),
          grads)
  return microbatch.microbatched(one_chunk, batch, microbatch_size,
                                 combine='concat')
