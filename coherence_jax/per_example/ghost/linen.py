"""Ghost norms for Flax linen models, found inside any loss function.

A linen loss is written as users write it, `loss_fn = lambda p, b: ...
model.apply({'params': p}, ...)`: nothing marks it as linen. So the loss is
traced once under `flax.linen.intercept_methods`, which sees every module
method call with its bound module; a call whose module reads params that
are leaves of `loss_fn`'s params argument (matched by identity in the
trace) is a layer. Built-in rules cover nn.Dense, DenseGeneral, Einsum,
Conv, Embed (lookup and attend) and the norm layers (BatchNorm in inference
mode), hence nn.MultiHeadDotProductAttention through them; any other module
that holds params only directly gets the per-module fallback. At run time
the same interceptor sends those calls through `ghost_rules.ghost_layer`
(one backward pass), evaluating the module alone with `module.clone().apply`
on its own variables. Boxed params (`nn.LogicallyPartitioned`) are unboxed.
Layers called several times, or inside `nn.scan` / lifted transforms, are
left to vmap.

Example:
  >>> import flax.linen as nn
  >>> class Net(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     return nn.Dense(2)(nn.LayerNorm()(nn.Dense(3)(x)))
  >>> net = Net()
  >>> p = net.init(jax.random.key(0), jnp.ones((1, 4)))['params']
  >>> loss = lambda p, b: (net.apply({'params': p}, b['x']) ** 2).sum(-1)
  >>> xs = {'x': jnp.ones((5, 4))}
  >>> sorted(set(cj.norm_paths(loss, p, xs, method='ghost').values()))
  ['ghost:materialize', 'ghost:outer']
"""

import contextlib
import threading
from collections.abc import Mapping
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax.linen import dtypes as linen_dtypes
from jax.extend import core as jex_core

from coherence_jax._tree import path_str
from coherence_jax.per_example import jaxpr_deps
from coherence_jax.per_example.ghost import contraction
from coherence_jax.per_example.ghost import plan as ghost_plan
from coherence_jax.per_example.ghost import registry as ghost_registry
from coherence_jax.per_example.ghost import rules as ghost_rules

BUILTIN = {
    nn.Dense: ghost_registry.Rule('linear', ('kernel', 'bias')),
    nn.DenseGeneral: ghost_registry.Rule('linear', ('kernel', 'bias')),
    nn.Einsum: ghost_registry.Rule('linear', ('kernel', 'bias')),
    nn.Conv: ghost_registry.Rule('conv', ('kernel', 'bias')),
    nn.Embed: ghost_registry.Rule('embed', ('embedding',),
                                  ('__call__', 'attend')),
    nn.LayerNorm: ghost_registry.Rule('norm', ('scale', 'bias')),
    nn.GroupNorm: ghost_registry.Rule('norm', ('scale', 'bias')),
    nn.RMSNorm: ghost_registry.Rule('norm', ('scale', 'bias')),
    nn.BatchNorm: ghost_registry.Rule('norm', ('scale', 'bias')),
}
_TAG = 'coherence_jax_linen_call'
_STATE = threading.local()


@contextlib.contextmanager
def _passthrough():
  """Interceptors let calls through (a module evaluated on its own)."""
  depth = getattr(_STATE, 'depth', 0)
  _STATE.depth = depth + 1
  try:
    yield
  finally:
    _STATE.depth = depth


def _passing() -> bool:
  return getattr(_STATE, 'depth', 0) > 0


def lookup(module) -> ghost_registry.Rule:
  """The rule of a linen module: registered, built-in, or per-module.

  Example:
    >>> lookup(nn.Dense(3)).kind, lookup(nn.Embed(5, 2)).methods
    ('linear', ('__call__', 'attend'))
  """
  cls = type(module)
  for base in cls.__mro__:
    rule = ghost_registry.registered(base) or BUILTIN.get(base)
    if rule is not None and all(getattr(cls, m, None) is getattr(base, m, None)
                                for m in rule.methods):
      return rule
  return ghost_registry.MODULE_FALLBACK


def _own_params(module) -> Tuple[Dict[str, jax.Array], bool]:
  """(the module's direct param arrays, whether it also has child params)."""
  params = module.variables.get('params', {})
  own, nested = {}, False
  for name, value in params.items():
    value = nn.meta.unbox(value)
    if isinstance(value, Mapping):
      nested = nested or bool(jax.tree.leaves(value))
    else:
      own[name] = value
  return own, nested


def module_apply(module, method: str, kwargs):
  """apply(p, x): the module alone, its own params replaced by p.

  Other collections (BatchNorm statistics) keep the module's values;
  interceptors let the inner calls through.
  """
  others = {k: v for k, v in module.variables.items() if k != 'params'}
  boxed = module.variables.get('params', {})
  unbound = module.clone(parent=None)

  def apply(p, x):
    params = {k: (p[k] if k in p else v) for k, v in boxed.items()}
    with _passthrough():
      return unbound.apply({**others, 'params': params}, x,
                           method=method, **kwargs)

  return apply


def _contraction(module, method, x, kwargs):
  """The `Contraction` of a linen linear call or attend, or why there is none."""
  if method == 'attend':
    spec = contraction.of_attend(x.ndim)
  elif isinstance(module, nn.Dense):
    if module.dot_general is not None or module.dot_general_cls is not None:
      return 'uses a custom dot_general'
    spec = contraction.of_linear(x.ndim, module.use_bias)
  elif isinstance(module, nn.DenseGeneral):
    if module.dot_general is not None or module.dot_general_cls is not None:
      return 'uses a custom dot_general'
    axis = module.axis if isinstance(module.axis, tuple) else (module.axis,)
    features = (module.features if isinstance(module.features, tuple)
                else (module.features,))
    spec = contraction.of_linear_general(
        x.ndim, axis, tuple(module.batch_dims), len(features), module.use_bias)
  else:
    einsum_str = kwargs.get('einsum_str') or module.einsum_str
    spec = contraction.of_einsum(str(einsum_str), x.ndim, len(module.shape),
                                 module.use_bias)
  if not isinstance(spec, str) and getattr(
      module, 'promote_dtype', linen_dtypes.promote_dtype) is not (
          linen_dtypes.promote_dtype):
    return 'uses a custom promote_dtype'
  return spec


def _call_problem(layer, module, method, x, kwargs, size):
  """(the call's info for its rule, None), or (None, why it cannot take it)."""
  shape = getattr(x, 'shape', ())
  if not shape or shape[0] != size:
    return None, (f'input of shape {shape} has no leading example axis of '
                  f'size {size}')
  for k, v in kwargs.items():
    if isinstance(v, jax.Array) or hasattr(v, 'aval'):
      return None, f'is called with the array argument {k!r}'
    elif k == 'use_running_average' and v is False:
      return None, 'BatchNorm in training mode couples the examples'
    elif k not in ('use_running_average', 'einsum_str', 'mask') and (
        layer.kind not in ('module', 'registered')):
      return None, f'is called with keyword argument {k}={v!r}'
  if isinstance(module, nn.BatchNorm) and not (
      kwargs.get('use_running_average') or module.use_running_average):
    return None, ('BatchNorm in training mode couples the examples of a '
                  'batch; apply the model with use_running_average=True')
  if layer.kind == 'conv' and len(shape) < len(module.kernel_size) + 2:
    return None, f'input of shape {shape} has no batch axis'
  return ghost_plan.call_info(layer, module, method, x, kwargs, _contraction)


def _module_key(module) -> Tuple[type, tuple]:
  return type(module), tuple(module.scope.path) if module.scope else ()


def plan(loss_fn, params, chunk, size: int, forced=None) -> ghost_plan.Plan:
  """Traces `loss_fn` once under linen interception; the `ghost_plan.Plan`.

  Layers are keyed by the path of their params in `params`; each carries
  `module_key` (module type, scope path), by which the run-time interceptor
  (`hooked`) recognizes its calls.

  Example:
    >>> import flax.linen as nn
    >>> dense = nn.Dense(2)
    >>> p = dense.init(jax.random.key(0), jnp.ones((1, 3)))['params']
    >>> loss = lambda p, b: dense.apply({'params': p}, b).sum(-1)
    >>> layer = plan(loss, p, jnp.ones((4, 3)), 4).layers[()]
    >>> layer.kind, layer.forms, layer.module_key
    ('linear', {'kernel': 'outer', 'bias': 'materialize'}, (<class 'flax.linen.linear.Dense'>, ()))
  """
  paths = ghost_plan.leaf_paths(params)
  layers: Dict[tuple, ghost_plan.Layer] = {}
  keys: Dict[tuple, tuple] = {}
  problems: Dict[tuple, str] = {}

  def traced(p, chunk):
    top = jex_core.get_opaque_trace_state(convention=_TAG)
    leaf_path = {id(leaf): path for path, leaf in
                 zip(paths, jax.tree.leaves(p))}

    def interceptor(next_fun, args, kwargs, context):
      module, method = context.module, context.method_name
      if _passing() or method not in ghost_plan.METHODS:
        return next_fun(*args, **kwargs)
      own, nested = _own_params(module)
      paths = {n: leaf_path.get(id(v)) for n, v in own.items()}
      if not own or None in paths.values():
        return next_fun(*args, **kwargs)
      prefixes = {path[:-1] for path in paths.values()}
      rule = lookup(module)
      if len(prefixes) != 1 or (rule.params is None and nested):
        for path in paths.values():
          problems[path] = (f'{type(module).__name__} at '
                            f'{path_str(path[:-1])!r} holds params of its own '
                            'and layers')
        return next_fun(*args, **kwargs)
      prefix = prefixes.pop()
      layer = layers.get(prefix)
      if layer is None:
        layer = layers[prefix] = ghost_plan.Layer(prefix, rule.kind,
                                                  rule=rule)
        keys[prefix] = _module_key(module)
      names = tuple(n for n in own if rule.params is None or n in rule.params)
      layer.params = tuple(dict.fromkeys(layer.params + names))
      for n in own:
        if n not in names:
          problems[paths[n]] = f'{type(module).__name__} param {n!r} has no rule'
      base = getattr(type(module), method)
      x, named = ghost_plan.split_args(base, module, args, kwargs)
      if x is None:
        layer.flag(named)
        return next_fun(*args, **kwargs)
      info, problem = _call_problem(layer, module, method, x, named, size)
      if problem is None and (
          jex_core.get_opaque_trace_state(convention=_TAG) != top):
        problem = ('is called inside a linen lifted transformation (nn.scan, '
                   'nn.remat, nn.jit, ...); ghost norms need direct calls')
      if problem is not None:
        layer.flag(problem)
        return next_fun(*args, **kwargs)
      zeros = {n: jnp.zeros(v.shape, v.dtype) for n, v in own.items()}
      apply, undo = ghost_plan.example_first(
          info, module_apply(module, method, named))
      with jax.named_scope(f'{_TAG}{len(keys)}_{len(layer.calls)}'):
        z = apply(zeros, x)
      if getattr(z, 'shape', (None,))[:1] != (size,):
        layer.flag(f'output of shape {getattr(z, "shape", None)} has no '
                   f'leading example axis of size {size}')
      else:
        layer.calls.append(ghost_plan.Call(
            method, named, info, tuple(x.shape), tuple(z.shape), z.dtype,
            {n: tuple(v.shape) for n, v in own.items()}))
      return undo(z)

    with nn.intercept_methods(interceptor):
      return jnp.sum(loss_fn(p, chunk))

  closed = jax.make_jaxpr(traced)(params, chunk)
  for i in jaxpr_deps.inputs_reaching_outputs(closed, len(paths)):
    layer = layers.get(paths[i][:-1])
    if layer is not None:
      layer.flag("its params are also used outside the layer's calls")
  for layer in layers.values():
    if len(layer.calls) > 1:
      layer.flag('is called several times (linen layers are taken once)')
    if layer.problem is None:
      layer.forms = ghost_plan.forms_of(layer, forced)
    layer.module_key = keys[layer.path]
  covered = {layer.path + (n,) for layer in layers.values()
             for n in layer.params}
  unsupported = {}
  for path in paths:
    if path not in covered:
      unsupported[path] = problems.get(
          path, 'not read by a linen layer called on the batch')
  return ghost_plan.Plan(layers, unsupported, linen=True)


@contextlib.contextmanager
def hooked(good, slots, top_level=False):
  """Routes the planned layers' calls through ghost rules (one pass).

  Args:
    good: {path: Layer} of the plan's handled layers (called once).
    slots: {layer key: {param name: zeros [B]}}, whose cotangents are the
      per-example squared norms.
    top_level: the pass runs in no loop (see `ghost.scaled_sum_and_sq_norms`).

  Yields:
    None; inside, `loss_fn` runs with ghost hooks.
  """
  by_key = {layer.module_key: layer for layer in good.values()
            if len(layer.calls) == 1}

  def interceptor(next_fun, args, kwargs, context):
    module, method = context.module, context.method_name
    layer = None if _passing() else by_key.get(_module_key(module))
    if layer is None or method != layer.calls[0].method:
      return next_fun(*args, **kwargs)
    call = layer.calls[0]
    base = getattr(type(module), method)
    x, named = ghost_plan.split_args(base, module, args, kwargs)
    own, _ = _own_params(module)
    p = {n: own[n] for n in layer.params}
    dtypes = {n: v.dtype for n, v in p.items()}
    info = {**call.info, 'forms': layer.forms, 'module': module,
            'top_level': top_level}
    apply, undo = ghost_plan.example_first(
        info, module_apply(module, method, named))
    rule = ghost_rules.RULES[ghost_rules.rule_name(layer.kind, method)]
    cast = lambda p: {n: v.astype(dtypes[n]) for n, v in p.items()}
    return undo(ghost_rules.ghost_layer(
        rule, info, lambda p, x: apply(cast(p), x),
        {n: ghost_rules.as_f32(v) for n, v in p.items()}, x,
        slots[layer.key]))

  with nn.intercept_methods(interceptor):
    yield
