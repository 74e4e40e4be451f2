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
"""

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import linear as nnx_linear
from jax.extend import core as jex_core

from coherence_jax import batching
from coherence_jax import coherence
from coherence_jax import nnx_bridge
from coherence_jax import per_example
from coherence_jax import reductions

PyTree = Any
METHODS = ('ghost', 'auto')
SQ_NORM_METHODS = ('ghost', 'auto', 'vmap')
FORMS = ('outer', 'gram', 'materialize')

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

# Forces one form for every layer where it applies (tests and benchmarks).
_FORCE_FORM: contextvars.ContextVar = contextvars.ContextVar(
    'coherence_jax_ghost_force_form', default=None)


@contextlib.contextmanager
def force_form(form: Optional[str]):
  """Makes every traced layer use `form` ('gram' or 'materialize') where it can.

  Only affects functions traced inside the context (use a fresh `jax.jit`).

  Example:
    >>> with force_form('gram'):
    ...   q = jax.jit(sq_norms_unjitted, static_argnums=0)(loss_fn, params, batch)
  """
  if form not in (None, 'gram', 'materialize'):
    raise ValueError(f"form: got {form!r}; pass 'gram', 'materialize' or None.")
  token = _FORCE_FORM.set(form)
  try:
    yield
  finally:
    _FORCE_FORM.reset(token)


def choose_form(positions: int, d_in: int, d_out: int,
                gram_ok: bool = True) -> str:
  """Cheaper way to get ‖A_iᵀ Δ_i‖² for A_i [T, d_in], Δ_i [T, d_out].

  'outer' for T = 1, 'gram' when T²(d_in + d_out) ≤ T d_in d_out, else
  'materialize' (form the per-example gradient; its sum is the batch grad).

  >>> choose_form(1, 784, 128), choose_form(49, 4608, 512), choose_form(196, 288, 64)
  ('outer', 'gram', 'materialize')
  """
  forced = _FORCE_FORM.get()
  if positions == 1 and forced is None:
    return 'outer'
  if not gram_ok:
    return 'materialize'
  if forced is not None:
    return forced
  gram = positions * positions * (d_in + d_out)
  return 'gram' if gram <= positions * d_in * d_out else 'materialize'


# ----------------------------------------------------------- per-layer rules
# A rule gets the layer's pure `apply(p, x)`, its params p (dict name -> array),
# input x, output cotangent dz and the standard cotangents dp_std; it returns
# the params cotangent (= S of the layer) and {name: [B] squared norms}.

def _f32(x):
  return x.astype(jnp.float32)


def _sq_norms_of_product(a: jax.Array, d: jax.Array, form: str):
  """Per-example ‖a_iᵀ d_i‖² for a [B, T, K], d [B, T, N]; also the grads if formed."""
  if form == 'outer':
    return jnp.sum(a * a, (1, 2)) * jnp.sum(d * d, (1, 2)), None
  if form == 'gram':
    aa = jnp.einsum('btk,bsk->bts', a, a)
    dd = jnp.einsum('btn,bsn->bts', d, d)
    return jnp.sum(aa * dd, (1, 2)), None
  g = jnp.einsum('btk,btn->bkn', a, d)
  return reductions.per_example_sq_norm(g), g


def _per_example_param_grads(apply, p, x, dz, names):
  """Per-example grads of the layer's params `names`: vmap over examples."""
  fixed = {k: v for k, v in p.items() if k not in names}

  def one(xi, dzi):
    f = lambda sub: apply({**fixed, **sub}, xi[None])
    _, vjp = jax.vjp(f, {k: p[k] for k in names})
    return vjp(dzi[None])[0]

  return jax.vmap(one)(x, dz)


def _materialized(apply, p, x, dz, names, dp):
  """Fills dp and returns norms for `names` from per-example grads."""
  grads = _per_example_param_grads(apply, p, x, dz, names)
  q = {}
  for name in names:
    g = _f32(grads[name])
    q[name] = reductions.per_example_sq_norm(g)
    dp[name] = reductions.sum_over_examples(g).astype(p[name].dtype)
  return q


def _bias_rule(d, p, dp, q):
  if 'bias' in p:
    gb = jnp.sum(d, 1)
    q['bias'] = reductions.per_example_sq_norm(gb)
    dp['bias'] = reductions.sum_over_examples(gb).astype(p['bias'].dtype)


def _linear_rule(info, apply, p, x, dz, dp_std):
  del info, apply
  size = x.shape[0]
  a = _f32(x).reshape(size, -1, x.shape[-1])
  d = _f32(dz).reshape(size, -1, dz.shape[-1])
  dp, q = dict(dp_std), {}
  positions, d_in, d_out = a.shape[1], a.shape[2], d.shape[2]
  form = choose_form(positions, d_in, d_out)
  if form == 'materialize':
    def part(a, d):
      g = _sq_norms_of_product(a, d, form)[1]
      return reductions.sum_over_examples(g), reductions.per_example_sq_norm(g)
    s, q['kernel'] = _over_example_chunks(
        part, (a, d), positions * (d_in + d_out) + d_in * d_out)
    dp['kernel'] = s.astype(p['kernel'].dtype)
  else:
    q['kernel'] = _sq_norms_of_product(a, d, form)[0]
  _bias_rule(d, p, dp, q)
  return dp, q


def _conv_patches(info, x):
  """im2col of the conv input by strided slices: [B, T, K], K = (*window, c_in).

  Matches nnx.Conv's layout, so Σ_t patchesᵀ Δ reshapes to the kernel. Pure data
  movement (lax.conv_general_dilated_patches is a conv with a one-hot kernel,
  several times the FLOPs of the layer itself on XLA:CPU).
  """
  window, strides = info['kernel_size'], info['strides']
  in_dil, k_dil = info['input_dilation'], info['kernel_dilation']
  spatial = x.shape[1:-1]
  dilated_in = [(n - 1) * d + 1 for n, d in zip(spatial, in_dil)]
  dilated_k = [(k - 1) * d + 1 for k, d in zip(window, k_dil)]
  padding = info['padding']
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(dilated_in, dilated_k, strides, padding)
  x = jax.lax.pad(_f32(x), 0.0, [(0, 0, 0)] + [
      (lo, hi, d - 1) for (lo, hi), d in zip(padding, in_dil)] + [(0, 0, 0)])
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], dilated_k, strides)]
  cols = []
  for offset in itertools.product(*[range(k) for k in window]):
    start = [o * d for o, d in zip(offset, k_dil)]
    cols.append(jax.lax.slice(
        x, [0] + start + [0],
        [x.shape[0]] + [b + (n - 1) * s + 1 for b, n, s in
                        zip(start, out, strides)] + [x.shape[-1]],
        [1] + list(strides) + [1]))
  patches = jnp.stack(cols, axis=-2)
  return patches.reshape(x.shape[0], -1, patches.shape[-2] * patches.shape[-1])


def _over_example_chunks(fn, arrays, floats_per_example: int):
  """fn on chunks of examples (lax.map, bounded memory); sums s, concatenates q.

  `fn(*chunk) -> (s, q)` with s summed over examples and q of shape [chunk].
  Chunks hold about _CHUNK_FLOATS intermediate floats.
  """
  size = arrays[0].shape[0]
  chunk = max(1, min(size, _CHUNK_FLOATS // max(1, floats_per_example)))
  if chunk >= size:
    return fn(*arrays)
  # Prefer a divisor of the batch: no remainder to compile a second time.
  divisor = max(c for c in range(1, chunk + 1) if size % c == 0)
  if 2 * divisor >= chunk:
    chunk = divisor
  full, tail = batching.split_microbatches(tuple(arrays), chunk, size)
  s, q = jax.lax.map(lambda c: fn(*c), full)
  s, q = jax.tree.map(lambda v: jnp.sum(v, 0), s), [q.reshape(-1)]
  if tail is not None:
    s_tail, q_tail = fn(*tail)
    s = jax.tree.map(jnp.add, s, s_tail)
    q.append(q_tail)
  return s, jnp.concatenate(q)


_CHUNK_FLOATS = 1 << 22  # 16 MiB of float32 per chunk of examples


def _conv_rule(info, apply, p, x, dz, dp_std):
  size = x.shape[0]
  d = _f32(dz).reshape(size, -1, dz.shape[-1])
  kernel = p['kernel']
  d_in = kernel.size // kernel.shape[-1]
  positions, d_out = d.shape[1], d.shape[2]
  form = choose_form(positions, d_in, d_out, gram_ok=info['gram_ok'])
  dp, q = dict(dp_std), {}
  if not info['gram_ok']:  # groups, masks, circular/reflect/causal padding
    q.update(_materialized(apply, p, x, dz, ('kernel',), dp))
  elif form == 'materialize':
    def part(x, d):
      a = _conv_patches(info, x)
      g = jnp.einsum('btk,btn->bkn', a, d)
      return reductions.sum_over_examples(g), reductions.per_example_sq_norm(g)
    s, q['kernel'] = _over_example_chunks(
        part, (x, d), positions * (d_in + d_out) + d_in * d_out)
    dp['kernel'] = s.reshape(kernel.shape).astype(kernel.dtype)
  else:
    def part(x, d):
      return 0.0, _sq_norms_of_product(_conv_patches(info, x), d, form)[0]
    q['kernel'] = _over_example_chunks(
        part, (x, d), positions * (positions + d_in + d_out))[1]
  _bias_rule(d, p, dp, q)
  return dp, q


def _embed_rule(info, apply, p, x, dz, dp_std):
  size = x.shape[0]
  table = p['embedding']
  vocab, feat = table.shape
  tok = x.reshape(size, -1)
  d = _f32(dz).reshape(size, tok.shape[1], feat)
  dp = dict(dp_std)
  positions = tok.shape[1]
  gram_ok = info['num_embeddings'] > 1
  use_gram = gram_ok and (_FORCE_FORM.get() == 'gram' or (
      _FORCE_FORM.get() is None
      and positions * positions * (feat + 1) <= vocab * feat))
  if not use_gram:
    return dp, _materialized(apply, p, x, dz, ('embedding',), dp)
  tok = jnp.where(tok < 0, tok + vocab, tok)  # jnp.take wraps negatives
  valid = (tok >= 0) & (tok < vocab)          # and drops the rest
  same = ((tok[:, :, None] == tok[:, None, :])
          & valid[:, :, None] & valid[:, None, :])
  dd = jnp.einsum('btf,bsf->bts', d, d)
  return dp, {'embedding': jnp.sum(jnp.where(same, dd, 0.0), (1, 2))}


def _norm_rule(info, apply, p, x, dz, dp_std):
  del info
  dp = dict(dp_std)
  return dp, _materialized(apply, p, x, dz, tuple(p), dp)


_RULES = {'linear': _linear_rule, 'conv': _conv_rule, 'embed': _embed_rule,
          'norm': _norm_rule}


def _ghost_layer(rule, info, apply, p, x, q_slots):
  """apply(p, x) whose backward also writes per-example norms into q_slots."""

  @jax.custom_vjp
  def layer(p, x, q_slots):
    del q_slots
    return apply(p, x)

  def fwd(p, x, q_slots):
    del q_slots
    return apply(p, x), (p, x)

  def bwd(res, dz):
    p, x = res
    _, vjp_fn = jax.vjp(apply, p, x)  # forward recompute is dead code for dense/conv
    dp_std, dx = vjp_fn(dz)
    dp, q = rule(info, apply, p, x, dz, dp_std)
    return dp, dx, q

  layer.defvjp(fwd, bwd)
  return layer(p, x, q_slots)


# ------------------------------------------------------------- interception
_HOOKS: contextvars.ContextVar = contextvars.ContextVar(
    'coherence_jax_ghost_hooks', default=None)


def _ghost_call(self, *args, **kwargs):
  base_call = type(self)._ghost_base.__call__  # pylint: disable=protected-access
  hooks = _HOOKS.get()
  hook = None if hooks is None else hooks.get(id(self))
  if hook is None:
    return base_call(self, *args, **kwargs)
  return hook(self, base_call, args, kwargs)


@functools.lru_cache(maxsize=None)
def _ghost_class(cls):
  """A subclass of `cls` whose `__call__` consults the active hooks."""
  def body(ns):
    ns.update({'__call__': _ghost_call, '_ghost_base': cls,
               '__module__': cls.__module__, '__qualname__': cls.__qualname__})
  return types.new_class(cls.__name__, (cls,), {}, body)


@contextlib.contextmanager
def _intercepted(hooked: List[Tuple[nnx.Module, Callable]]):
  """Routes calls of the given module instances to their hooks, then restores."""
  saved = [(m, type(m)) for m, _ in hooked]
  token = _HOOKS.set({id(m): hook for m, hook in hooked})
  try:
    for module, cls in saved:
      module.__class__ = _ghost_class(cls)
    yield
  finally:
    _HOOKS.reset(token)
    for module, cls in saved:
      module.__class__ = cls


def _pure_apply(module, base_call, kwargs):
  """apply(p, x): the module's own __call__ on a copy that holds params p."""
  graphdef, pstate, rest = nnx.split(module, nnx.Param, ...)

  def apply(p, x):
    params = jax.tree.map(lambda v: v, pstate)
    nnx.replace_by_pure_dict(params, p)
    copy = nnx.merge(graphdef, params, rest)
    return base_call(copy, x, **kwargs)

  return apply


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
    return '/'.join(map(str, self.path)) or '<root>'

  def flag(self, problem: str) -> None:
    if self.problem is None:
      self.problem = problem


def _path_name(path) -> str:
  return '/'.join(map(str, path)) or '<root>'


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
          f'module {_path_name(owner_path)!r} of type {type(owner).__name__} '
          f'holds param {name!r} and has no ghost rule (supported: '
          f'{_SUPPORTED_NAMES})')
  return layers, unsupported


def _layer_info(module, kind) -> Dict[str, Any]:
  if kind != 'conv':
    return {'num_embeddings': getattr(module, 'num_embeddings', None)}
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
                      and module.mask is None)}


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


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _depends_on(closed_jaxpr, num_watched: int) -> set:
  """Indices of the first `num_watched` inputs that reach an output."""
  jaxpr = closed_jaxpr.jaxpr
  origin = {v: {i} for i, v in enumerate(jaxpr.invars[:num_watched])}
  for eqn in jaxpr.eqns:
    found = set()
    for v in eqn.invars:
      if not isinstance(v, jex_core.Literal):
        found |= origin.get(v, set())
    if found:
      for v in eqn.outvars:
        origin[v] = found
  reached = set()
  for v in jaxpr.outvars:
    if not isinstance(v, jex_core.Literal):
      reached |= origin.get(v, set())
  return reached


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
      hooked.append((module, _plan_hook(layer, _get(p_in, path), size)))
    with _intercepted(hooked):
      return jnp.sum(loss_fn.loss(model, chunk))

  for layer in layers.values():
    layer.calls, layer.problem = 0, None
  closed = jax.make_jaxpr(traced)(params, params, chunk)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  owner = {}
  for i, (kpath, _) in enumerate(flat):
    path = tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in kpath)
    if path[:-1] in layers:
      owner[i] = layers[path[:-1]]
  for i in _depends_on(closed, len(flat)):
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
    z = _pure_apply(module, base_call, kwargs)(p, args[0])
    if getattr(z, 'shape', ())[:1] != (size,):
      layer.flag(f'output of shape {getattr(z, "shape", ())} has no leading '
                 f'example axis of size {size}')
    return z
  return hook


def _run_hook(layer, q_slots):
  rule = _RULES[layer.kind]

  def hook(module, base_call, args, kwargs):
    p = {name: getattr(module, name)[...] for name in layer.params}
    apply = _pure_apply(module, base_call, kwargs)
    info = _layer_info(module, layer.kind)
    return _ghost_layer(rule, info, apply, p, args[0], q_slots)
  return hook


# ---------------------------------------------------------- the computation
def _check_method(method, allowed):
  if method not in allowed:
    raise ValueError(f'method: got {method!r}; pass one of {allowed}.')


def _is_nnx(loss_fn) -> bool:
  return isinstance(loss_fn, nnx_bridge.NNXLossFn)


def _not_nnx_error(loss_fn):
  return ValueError(
      f"loss_fn: method='ghost' needs the model's layers, but got "
      f'{type(loss_fn).__name__}; build loss_fn with coherence_jax.from_nnx('
      "model, loss), or pass method='auto' or 'vmap' to use per-example "
      'gradients instead.')


def _chunk_grads_and_norms(loss_fn, params, chunk, method, axis_name):
  """(S, per-example squared norms per leaf [B]) for one chunk."""
  size = batching.batch_size(chunk)
  layers, unsupported = _plan(loss_fn, params, chunk, size)
  bad = dict(unsupported)
  for layer in layers.values():
    if layer.problem is not None:
      for name in layer.params:
        bad[layer.path + (name,)] = (
            f'layer {layer.key!r} ({layer.kind}) {layer.problem}')
  if bad and method == 'ghost':
    lines = '\n  '.join(f'{_path_name(p)}: {r}' for p, r in sorted(
        bad.items(), key=lambda kv: _path_name(kv[0])))
    raise ValueError(
        "method='ghost' cannot compute per-example norms of these params:\n  "
        f"{lines}\nPass method='auto' to use per-example vmap gradients for "
        "them, or method='vmap'.")
  good = {p: l for p, l in layers.items() if l.problem is None}
  slots = batching.as_varying(
      {l.key: {n: jnp.zeros((size,), jnp.float32) for n in l.params}
       for l in good.values()}, axis_name)

  def total_loss(p, q):
    model = loss_fn.model(p)
    nodes = dict(nnx.iter_graph(model))
    hooked = [(nodes[path], _run_hook(layer, q[layer.key]))
              for path, layer in good.items()]
    with _intercepted(hooked):
      return jnp.sum(loss_fn.loss(model, chunk))

  sum_grads, norms = jax.grad(total_loss, argnums=(0, 1))(params, slots)
  fallback = _vmap_norms(loss_fn, params, chunk, set(bad))
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for kpath, _ in flat:
    path = tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in kpath)
    if path in fallback:
      out.append(fallback[path])
    else:
      layer = good[path[:-1]]
      out.append(norms[layer.key][path[-1]])
  sum_grads = jax.tree.map(lambda g: g.astype(jnp.float32), sum_grads)
  return sum_grads, jax.tree_util.tree_unflatten(treedef, out)


def _vmap_norms(loss_fn, params, chunk, paths) -> Dict[tuple, jax.Array]:
  """Per-example squared norms of the params at `paths`, by vmap."""
  if not paths:
    return {}
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [leaf for _, leaf in flat]
  keys = [tuple(getattr(k, 'key', getattr(k, 'idx', k)) for k in kpath)
          for kpath, _ in flat]
  idx = [i for i, key in enumerate(keys) if key in paths]
  one = batching.single_example_loss(loss_fn)

  def loss_of(sub, example):
    full = list(leaves)
    for i, v in zip(idx, sub):
      full[i] = v
    return one(jax.tree_util.tree_unflatten(treedef, full), example)

  grads = jax.vmap(jax.grad(loss_of), in_axes=(None, 0))(
      [leaves[i] for i in idx], chunk)
  return {keys[i]: reductions.per_example_sq_norm(_f32(g))
          for i, g in zip(idx, grads)}


def sq_norms_unjitted(loss_fn, params, batch, method='auto',
                      microbatch_size=None, axis_name=None) -> PyTree:
  """Traceable body of `per_example_sq_norms`."""
  _check_method(method, SQ_NORM_METHODS)
  size = batching.check_per_example_loss(loss_fn, params, batch)
  batching.check_microbatch_size(microbatch_size)
  if method == 'ghost' and not _is_nnx(loss_fn):
    raise _not_nnx_error(loss_fn)
  params = batching.as_varying(params, axis_name)
  if method == 'vmap' or not _is_nnx(loss_fn):
    def one_chunk(chunk):
      grads = per_example.example_grads_unjitted(loss_fn, params, chunk)
      return jax.tree.map(lambda g: reductions.per_example_sq_norm(_f32(g)),
                          grads)
  else:
    def one_chunk(chunk):
      return _chunk_grads_and_norms(loss_fn, params, chunk, method,
                                    axis_name)[1]
  if microbatch_size is None or microbatch_size >= size:
    return one_chunk(batch)
  chunks, tail = batching.split_microbatches(batch, microbatch_size, size)
  parts = []
  if chunks is not None:
    parts.append(jax.tree.map(lambda q: q.reshape(-1),
                              jax.lax.map(one_chunk, chunks)))
  if tail is not None:
    parts.append(one_chunk(tail))
  return jax.tree.map(lambda *qs: jnp.concatenate(qs), *parts)


@functools.partial(jax.jit, static_argnames=('loss_fn', 'method',
                                             'microbatch_size', 'axis_name'))
def per_example_sq_norms(loss_fn, params, batch, *, method: str = 'auto',
                         microbatch_size: Optional[int] = None,
                         axis_name: Optional[str] = None) -> PyTree:
  """‖∇ℓ_i‖² per param leaf and example: a params-shaped pytree of [B] arrays.

  method='ghost' computes them from one backward pass without forming
  per-example gradients (loss_fn from `from_nnx`; unsupported layers are a
  ValueError naming them); 'auto' does the same and uses per-example vmap
  gradients for whatever ghost cannot handle (everything, if loss_fn is not
  from `from_nnx`); 'vmap' always uses per-example gradients. Summing the
  leaves gives each example's total squared gradient norm. With `axis_name`
  (inside `jax.shard_map` / `jax.pmap`, batch sharded) each device returns the
  norms of its own examples; nothing is summed across devices.

  Example:
    >>> loss_fn, params = from_nnx(CNN(rngs=nnx.Rngs(0)), cross_entropy_loss)
    >>> q = per_example_sq_norms(loss_fn, params, batch)
    >>> q['conv1']['kernel'].shape
    (128,)
  """
  return sq_norms_unjitted(loss_fn, params, batch, method, microbatch_size,
                           axis_name)


def stats_unjitted(loss_fn, params, batch, microbatch_size=None,
                   axis_name=None, method='auto') -> coherence.CoherenceStats:
  """Traceable body of `coherence_stats` for method='ghost' and 'auto'.

  Example:
    >>> stats = stats_unjitted(loss_fn, params, batch, method='ghost')
    >>> float(stats.m_coherence())
  """
  _check_method(method, METHODS)
  if not _is_nnx(loss_fn):
    if method == 'ghost':
      raise _not_nnx_error(loss_fn)
    return coherence.stats_unjitted(loss_fn, params, batch, microbatch_size,
                                    axis_name)
  size = batching.check_per_example_loss(loss_fn, params, batch)
  batching.check_microbatch_size(microbatch_size)
  params = batching.as_varying(params, axis_name)

  def chunk_stats(chunk):
    sum_grads, norms = _chunk_grads_and_norms(loss_fn, params, chunk, method,
                                              axis_name)
    return coherence.CoherenceStats(
        sum_grads=sum_grads, sum_sq_norms=jax.tree.map(jnp.sum, norms),
        count=jnp.asarray(batching.batch_size(chunk), jnp.int32))

  return coherence.stream_stats(chunk_stats, params, batch, size,
                                 microbatch_size, axis_name)
