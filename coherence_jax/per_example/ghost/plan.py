"""The ghost-norm plan: which layers ghost rules handle, and in which form.

One trace of the loss (`jax.make_jaxpr`, nothing runs) with every supported
module hooked records each call of each layer: its method (`__call__`, or
`Embed.attend`), keyword arguments, input and output shapes, and the layer's
contraction (`contraction.Contraction`) or conv geometry. A layer is then
  - handled by ghost rules, with a form per param ('outer', 'gram' or
    'materialize', `ghost_rules.choose_form` by cost over the positions of
    all its calls), or
  - flagged with the reason it is not (the caller raises under
    method='ghost' and uses vmap under 'auto').
Layers called more than once are handled (their cross terms are exact),
and so are calls inside jit / checkpoint (remat) and inside a scan over
params stacked along it; a layer shared across a scan's iterations, a call
under vmap, keyword arguments that change the computation, or params also
read outside the layer's calls are not (docs/design/ghost_norms.md).

Example:
  >>> p = plan(loss_fn, params, batch, size=16)   # from_nnx(MLP(...))
  >>> layer = p.layers[('layers', 0)]
  >>> layer.kind, len(layer.calls), layer.forms
  ('linear', 1, {'kernel': 'outer', 'bias': 'materialize'})
"""

import dataclasses
import inspect
import math
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.linen import meta as linen_meta
from flax.nnx.nn import dtypes as nnx_dtypes
from flax.nnx.nn import linear as nnx_linear
from jax.extend import core as jex_core

from coherence_jax._tree import key_tuple
from coherence_jax._tree import path_str
from coherence_jax.per_example import jaxpr_deps
from coherence_jax.per_example import module_hooks
from coherence_jax.per_example.ghost import contraction
from coherence_jax.per_example.ghost import registry as ghost_registry
from coherence_jax.per_example.ghost import rules as ghost_rules

# The methods routed through hooks (where the class has them).
METHODS = ('__call__', 'attend')
SUPPORTED_NAMES = ghost_registry.SUPPORTED_NAMES
# Keyword arguments a supported call may carry: the values allowed.
_ALLOWED_KWARGS = {'out_sharding': (None,), 'mask': (None,),
                   'use_running_average': (None, True)}
_TRACE_CONVENTION = 'coherence_jax'
_TAG = 'coherence_jax_ghost_call'


@dataclasses.dataclass
class Call:
  """One call of a layer: what the rules need to know about it.

  Attributes:
    method: '__call__' or 'attend'.
    kwargs: its keyword arguments (positional extras named).
    info: static facts for the rule: {'spec': Contraction} for contractions
      (Linear, LinearGeneral, Einsum, Embed.attend), {'vocab': V} for a
      lookup, the geometry for a conv, {} for a norm layer.
    x_shape: the input's shape.
    z_shape: the output's shape.
    z_dtype: the output's dtype.
    p_shapes: the shapes of the layer's params in this call (a slice of
      the stacked params inside `nnx.scan`).
    stack: for params stacked over a scan, its length (the params' leading
      axis); None for params used whole.
    tag: the named scope of the call in the plan's trace.
  """
  method: str
  kwargs: Dict[str, Any]
  info: Dict[str, Any]
  x_shape: Tuple[int, ...]
  z_shape: Tuple[int, ...]
  z_dtype: Any
  p_shapes: Dict[str, Tuple[int, ...]] = dataclasses.field(
      default_factory=dict)
  stack: Optional[int] = None
  tag: str = ''


@dataclasses.dataclass
class Layer:
  """A supported module of the model, its calls in one loss evaluation."""
  path: Tuple[Any, ...]
  kind: str
  params: Tuple[str, ...] = ()
  calls: List[Call] = dataclasses.field(default_factory=list)
  problem: Optional[str] = None
  forms: Dict[str, str] = dataclasses.field(default_factory=dict)
  rule: Optional[ghost_registry.Rule] = None
  inside: bool = False  # called inside jit / scan / remat within the loss
  module_key: Any = None  # linen: (module type, scope path) at run time

  @property
  def key(self) -> str:
    return path_str(self.path)

  def flag(self, problem: str) -> None:
    if self.problem is None:
      self.problem = problem


@dataclasses.dataclass
class Plan:
  """Supported layers by module path, and reasons for every other param."""
  layers: Dict[Tuple[Any, ...], Layer]
  unsupported: Dict[Tuple[Any, ...], str]
  linen: bool = False  # layers are flax.linen modules (linen.py)

  def good(self) -> Dict[Tuple[Any, ...], Layer]:
    """The layers ghost rules handle."""
    return {p: l for p, l in self.layers.items() if l.problem is None}

  def fallback(self) -> Dict[Tuple[Any, ...], str]:
    """{param path: reason} of every param ghost rules do not handle."""
    bad = dict(self.unsupported)
    for layer in self.layers.values():
      if layer.problem is not None:
        for name in layer.params:
          bad[layer.path + (name,)] = (
              f'layer {layer.key!r} ({layer.kind}) {layer.problem}')
    return bad

  def whole_vmap_is_cheaper(self, params, size: int) -> bool:
    """Whether one vmap pass for every param beats ghost + vmap for the rest.

    Params no rule covers need a per-example (vmap) backward pass of the whole
    model anyway. Taking every param's per-example gradient in that pass adds
    only the traffic of the covered params' per-example gradients
    (`ghost_rules.MATERIALIZE_COST` per entry and example), where the ghost
    pass costs about three forward passes (Σ over calls of B·T·K·N). XLA:CPU
    runs vmapped convolutions as loops, so models with a conv keep the ghost
    pass.

    Args:
      params: the params.
      size: examples in the batch.

    Returns:
      True when there is a fallback and the single vmap pass is cheaper.
    """
    if not self.fallback():
      return False
    forward, covered = 0, 0
    for layer in self.good().values():
      if layer.kind == 'conv':
        return False
      p = linen_meta.unbox(module_hooks.get_path(params, layer.path))
      covered += sum(p[n].size for n in layer.params)
      for c in layer.calls:
        if 'spec' in c.info:
          g, t, k, n = contraction.dims(c.info['spec'], c.x_shape, c.z_shape)
          forward += size * g * t * k * n * (c.stack or 1)
    return ghost_rules.MATERIALIZE_COST * size * covered < 3 * forward


def leaf_paths(params) -> List[Tuple[Any, ...]]:
  """Key paths of the leaves of `params`, looking through linen boxes.

  A param boxed in `nn.LogicallyPartitioned` is the leaf `value` of the
  box; its path is the box's, as the layer sees it.

  Example:
    >>> import flax.linen as nn
    >>> leaf_paths({'d': {'kernel': nn.Partitioned(jnp.ones(2), ('a',)),
    ...                   'bias': jnp.ones(2)}})
    [('d', 'bias'), ('d', 'kernel')]
  """
  unboxed = linen_meta.unbox(params)
  return [key_tuple(k) for k, _ in
          jax.tree_util.tree_flatten_with_path(unboxed)[0]]


# ---------------------------------------------------------------- inventory
def _nested_params(nodes) -> set:
  """Paths of modules with a param-holding module strictly below them."""
  out = set()
  for path, node in nodes.items():
    if isinstance(node, nnx.Param):
      owner = tuple(path[:-1])
      for k in range(len(owner)):
        if isinstance(nodes.get(owner[:k]), nnx.Module):
          out.add(owner[:k])
  return out


def _no_rule_reason(path, owner_path, owner) -> str:
  where = path_str(owner_path)
  if not isinstance(owner, nnx.Module):
    return (f'params in a {type(owner).__name__} at {where!r}, not module '
            'attributes: ghost norms read params as attributes of a module')
  return (f'module {where!r} of type {type(owner).__name__} reads params of '
          'its own and also holds layers, so no per-module rule applies; move '
          'them into a small module of their own called on the activations')


def _inventory(model) -> Tuple[Dict[tuple, Layer], Dict[tuple, str]]:
  """Handled layers by module path, and reasons for every other param."""
  nodes = dict(nnx.iter_graph(model))
  nested = _nested_params(nodes)
  layers: Dict[tuple, Layer] = {}
  unsupported: Dict[tuple, str] = {}
  for path, node in nodes.items():
    if not isinstance(node, nnx.Param):
      continue
    path = tuple(path)
    owner_path, name = path[:-1], path[-1]
    owner = nodes.get(owner_path)
    rule = (ghost_registry.lookup(owner) if isinstance(owner, nnx.Module)
            else None)
    ok = rule is not None and (
        name in rule.params if rule.params is not None
        else owner_path not in nested)
    if not ok:
      unsupported[path] = _no_rule_reason(path, owner_path, owner)
      continue
    layer = layers.setdefault(owner_path,
                              Layer(owner_path, rule.kind, rule=rule))
    layer.params += (name,)
  return layers, unsupported


# ------------------------------------------------------------------- calls
def split_args(base_call, module, args, kwargs):
  """(input, other arguments by name) of a call of `base_call`.

  Args:
    base_call: the class's method being called.
    module: the instance.
    args: positional arguments after `self`.
    kwargs: keyword arguments.

  Returns:
    `(x, named)`: the first argument and a dict of the others; `(None,
    reason)` when the signature rejects the arguments.

  Example:
    >>> split_args(nnx.Einsum.__call__, None, ('X', 'ab,bc->ac'), {})
    ('X', {'einsum_str': 'ab,bc->ac'})
  """
  try:
    bound = inspect.signature(base_call).bind(module, *args, **kwargs)
  except TypeError as e:
    return None, f'called with arguments its signature rejects ({e})'
  items = list(bound.arguments.items())[1:]
  if not items:
    return None, 'called without an input'
  return items[0][1], dict(items[1:])


def conv_info(module) -> Dict[str, Any]:
  """An nnx.Conv's geometry, as `ghost_rules.conv_patches` takes it.

  'gram_ok': the conv is one patches-times-kernel contraction (no feature
  groups, mask, or circular / reflect / causal padding).
  """
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


def _contraction_of(module, method, x, kwargs):
  """The `Contraction` of an NNX linear call or attend, or why there is none."""
  ndim = x.ndim
  if method == 'attend':
    spec = contraction.of_attend(ndim)
  elif isinstance(module, nnx.Linear):
    if module.dot_general is not jax.lax.dot_general:
      return 'uses a custom dot_general'
    spec = contraction.of_linear(ndim, module.bias is not None)
  elif isinstance(module, nnx.LinearGeneral):
    if module.dot_general is not None or module.dot_general_cls is not None:
      return 'uses a custom dot_general'
    spec = contraction.of_linear_general(
        ndim, module.axis, tuple(module.batch_axis), len(module.out_features),
        module.bias is not None)
  else:
    if module.einsum_op is not jnp.einsum:
      return 'uses a custom einsum_op'
    einsum_str = kwargs.get('einsum_str') or module.einsum_str
    spec = contraction.of_einsum(str(einsum_str), ndim, module.kernel.ndim,
                                 module.bias is not None)
  if not isinstance(spec, str) and (
      module.promote_dtype is not nnx_dtypes.promote_dtype):
    return 'uses a custom promote_dtype'
  return spec


def example_out_first(spec):
  """(spec with the example letter first in out, its axis in the output).

  Example:
    >>> spec, axis = example_out_first(contraction.Contraction(
    ...     'btd', 'sdh', 'sbth'))
    >>> spec.out, axis
    ('bsth', 1)
  """
  axis = spec.out.index(spec.example)
  if not axis:
    return spec, 0
  out = spec.example + spec.out.replace(spec.example, '')
  return dataclasses.replace(spec, out=out), axis


def _generic_kwargs_problem(kwargs) -> Optional[str]:
  """Array arguments besides the input cannot pass the per-module rule."""
  for k, v in kwargs.items():
    if isinstance(v, (jax.Array, np.ndarray)) or hasattr(v, 'aval'):
      return (f'is called with the array argument {k!r} besides its input; '
              'the per-module rule takes one array input (pass the others '
              'as module attributes, or concatenate them)')
  return None


def _call_problem(layer, module, method, x, kwargs, size) -> Optional[str]:
  generic = layer.kind in ('module', 'registered')
  if generic:
    problem = _generic_kwargs_problem(kwargs)
    if problem:
      return problem
  for k, v in kwargs.items():
    if generic:
      continue
    if k == 'einsum_str' and isinstance(module, nnx.Einsum):
      continue
    if k not in _ALLOWED_KWARGS or not any(v is a for a in _ALLOWED_KWARGS[k]):
      return f'called with keyword argument {k}={v!r}'
  shape = getattr(x, 'shape', ())
  if not shape or shape[0] != size:
    hint = ('; look up positions per example, e.g. with '
            'jnp.broadcast_to(positions, tokens.shape)'
            if layer.kind == 'embed' and method == '__call__' else '')
    return (f'input of shape {shape} has no leading example axis of size '
            f'{size}{hint}')
  if layer.kind == 'conv' and len(shape) < len(module.kernel_size) + 2:
    return f'input of shape {shape} has no batch axis'
  if isinstance(module, nnx.BatchNorm) and not (
      kwargs.get('use_running_average') or module.use_running_average):
    return ('BatchNorm in training mode couples the examples of a batch; run '
            'the model in inference mode (model.eval(), as from_nnx does)')
  return None


def call_info(layer, module, method, x, kwargs, contraction_of=None):
  """(info, None) for the rules, or (None, reason).

  Args:
    layer: the planned `Layer`.
    module: the called module (NNX, or linen with `contraction_of`).
    method: '__call__' or 'attend'.
    x: the call's input.
    kwargs: its other arguments by name.
    contraction_of: `f(module, method, x, kwargs)` -> the call's `Contraction`
      or why there is none (default: NNX's layers).
  """
  if layer.kind == 'linear' or method == 'attend':
    spec = (contraction_of or _contraction_of)(module, method, x, kwargs)
    reason = spec if isinstance(spec, str) else contraction.problem(spec)
    if reason:
      return None, reason
    spec, axis = example_out_first(spec)
    return ({'spec': spec, 'out_axis': axis} if axis else {'spec': spec},
            None)
  if layer.kind == 'embed':
    return {'vocab': module.num_embeddings}, None
  if layer.kind == 'conv':
    return conv_info(module), None
  if layer.kind == 'registered':
    return {'sq_norms': layer.rule.sq_norms}, None
  return {}, None


def _batched(values) -> bool:
  """Whether any value is being vmapped (a BatchTracer)."""
  return any(type(v).__name__ == 'BatchTracer' for v in values)


def _stack_of(layer, p_now, p_outer):
  """(scan length the params are stacked over or None, problem or None)."""
  stacks = set()
  for name in layer.params:
    inner, outer = tuple(p_now[name].shape), tuple(p_outer[name].shape)
    if inner == outer:
      stacks.add(None)
    elif outer[1:] == inner and outer:
      stacks.add(outer[0])
    else:
      return None, (f'sees its param {name!r} with shape {inner}, not its '
                    f'shape {outer} or a slice of it')
  if len(stacks) > 1:
    return None, 'sees some params whole and some as slices'
  return stacks.pop(), None


def _param_values(module, names):
  return {name: getattr(module, name).get_value() for name in names}


def _plan_hook(layer, p_outer, size, top, tag_prefix):
  def hook(module, base_call, args, kwargs):
    method = base_call.__name__
    x, named = split_args(base_call, module, args, kwargs)
    problem = named if x is None else None
    p_now = _param_values(module, layer.params)
    if problem is None and _batched([x, *p_now.values()]):
      problem = ('is called inside jax.vmap / nnx.vmap within the loss; '
                 'ghost norms need the example axis in the layer\'s input')
    if problem is None:
      problem = _call_problem(layer, module, method, x, named, size)
    if problem is None:
      info, problem = call_info(layer, module, method, x, named)
    if problem is None:
      stack, problem = _stack_of(layer, p_now, p_outer)
    if problem is not None:
      layer.flag(problem)
      return base_call(module, *args, **kwargs)
    if jex_core.get_opaque_trace_state(convention=_TRACE_CONVENTION) != top:
      layer.inside = True
    # Zeros of the params' shapes: the hooked call does not read the params,
    # so any path from them to the loss is a use outside the layer's calls.
    p = {name: jnp.zeros(v.shape, v.dtype) for name, v in p_now.items()}
    apply, undo = example_first(
        info, module_hooks.pure_apply(module, base_call, named))
    tag = f'{tag_prefix}_{len(layer.calls)}'
    with jax.named_scope(tag):
      z = apply(p, x)
    z_shape = getattr(z, 'shape', None)
    if z_shape is None:
      layer.flag(f'returns a {type(z).__name__}, not one array')
      return undo(z)
    if z_shape[:1] != (size,):
      layer.flag(f'output of shape {z_shape} has no leading example axis of '
                 f'size {size}')
    else:
      layer.calls.append(Call(
          method, named, info, tuple(x.shape), tuple(z_shape), z.dtype,
          {n: tuple(v.shape) for n, v in p_now.items()}, stack, tag))
    return undo(z)
  return hook


def _check_loops(layers, loops) -> None:
  """Flags calls in loops whose params are not stacked over that loop."""
  for layer in layers.values():
    if layer.problem is not None:
      continue
    if len(layer.calls) > 1 and layer.inside:
      layer.flag('is called several times, inside a JAX transformation of '
                 'the loss (jit, scan, checkpoint); ghost norms need such '
                 'layers called directly')
      continue
    for call in layer.calls:
      around = loops.get(call.tag, [])
      if not around and call.stack is None:
        continue
      if around == [call.stack]:
        continue
      if not around:
        layer.flag('sees slices of its params outside a scan')
      elif len(around) == 1 and call.stack is None:
        layer.flag('is called in a loop (scan) with the same params in every '
                   'iteration (ghost norms need the cross terms between '
                   'iterations: stack the layer over the scan, as '
                   'nnx.scan over nnx.vmap-created layers does, or call it '
                   'directly)')
      else:
        layer.flag(f'is called inside loops {around} that ghost norms do not '
                   'follow (one scan over params stacked along it is)')


def example_first(info, apply):
  """(apply with the output's example axis moved first, its inverse on z).

  An einsum such as 'BTD,SNDH->SBTNH' (Gemma's fused qkv) puts the example
  axis second in its output; the rules see it first.

  Args:
    info: the call's info (`Call.info`); 'out_axis' is where the example
      axis sits in the output (absent: 0).
    apply: the layer as `apply(p, x) -> z`.

  Returns:
    `(apply_first, undo)`.

  Example:
    >>> f, undo = example_first({'out_axis': 1}, lambda p, x: x)
    >>> f(None, jnp.zeros((3, 2))).shape, undo(jnp.zeros((2, 3))).shape
    ((2, 3), (3, 2))
  """
  axis = info.get('out_axis', 0)
  if not axis:
    return apply, lambda z: z
  return (lambda p, x: jnp.moveaxis(apply(p, x), axis, 0),
          lambda z: jnp.moveaxis(z, 0, axis))


# ------------------------------------------------------------------- forms
def _positions(call: Call) -> int:
  if call.method == 'attend':
    return math.prod(call.x_shape[1:-1])
  return math.prod(call.x_shape[1:])


def _linear_forms(layer, forced) -> Dict[str, str]:
  specs = [c.info['spec'] for c in layer.calls]
  forms = {'bias': 'materialize'} if 'bias' in layer.params else {}
  in_kernel = {s.example_in_kernel for s in specs}
  if in_kernel == {True}:   # per-example kernel slices: batch-grad slices
    return {'kernel': 'materialize', **forms}
  if len(in_kernel) > 1:
    layer.flag('is called with and without the example axis in its kernel')
    return forms
  first = specs[0].partition
  for s in specs[1:]:
    p = s.partition
    if p != first and p != (first[0], first[2], first[1]):
      layer.flag('contracts its kernel along different axes in its calls')
      return forms
  sizes = [contraction.dims(s, c.x_shape, c.z_shape)
           for s, c in zip(specs, layer.calls)]
  positions = sum(t for _, t, _, _ in sizes)
  _, _, k, n = sizes[0]
  return {'kernel': ghost_rules.choose_form(positions, k, n, forced=forced),
          **forms}


def _embed_forms(layer, forced, table_shape) -> Dict[str, str]:
  vocab, feat = table_shape
  positions = sum(_positions(c) for c in layer.calls)
  lookups = [c for c in layer.calls if c.method != 'attend']
  if lookups and lookups[0].info['vocab'] <= 1:
    form = 'materialize'  # nnx.Embed broadcasts a 1-row table: no jnp.take
  elif len(lookups) == len(layer.calls):
    gram = forced == 'gram' or (
        forced is None and positions * positions * (feat + 1)
        <= ghost_rules.MATERIALIZE_COST * vocab * feat)
    form = 'gram' if gram else 'materialize'
  else:
    form = ghost_rules.choose_form(positions, feat, vocab, forced=forced)
  return {'embedding': form}


def _conv_forms(layer, forced, kernel_shape) -> Dict[str, str]:
  forms = {'bias': 'materialize'} if 'bias' in layer.params else {}
  if len(layer.calls) > 1:
    return {'kernel': 'materialize', **forms}
  call = layer.calls[0]
  d_in = math.prod(kernel_shape[:-1])
  form = ghost_rules.choose_form(
      math.prod(call.z_shape[1:-1]), d_in, call.z_shape[-1],
      gram_ok=call.info['gram_ok'], forced=forced)
  return {'kernel': form, **forms}


def forms_of(layer, forced) -> Dict[str, str]:
  """{param name: form} of a layer whose calls are all recorded."""
  if not layer.calls:
    return {name: 'unused' for name in layer.params}
  shapes = layer.calls[0].p_shapes  # slices, for params stacked over a scan
  if layer.kind == 'linear':
    return _linear_forms(layer, forced)
  if layer.kind == 'embed':
    return _embed_forms(layer, forced, shapes['embedding'])
  if layer.kind == 'conv':
    return _conv_forms(layer, forced, shapes['kernel'])
  if layer.kind in ('module', 'registered'):
    return {name: layer.kind for name in layer.params}
  return {name: 'materialize' for name in layer.params}


# ------------------------------------------------------------------- plan
def plan(loss_fn, params, chunk, size: int,
         forced: Optional[str] = None) -> Plan:
  """Traces the loss once; returns the `Plan` of its layers.

  Args:
    loss_fn: an `NNXLossFn` (from `from_nnx`).
    params: its params.
    chunk: a batch (or micro-batch) with leading example axis `size`.
    size: the number of examples in `chunk`.
    forced: None (cheapest form per layer), 'gram' or 'materialize'.

  Returns:
    The `Plan`: supported layers (each with its calls and forms, or a
    `problem`) and the reasons of every param outside them.

  Example (nnx.Embed used for the lookup and, tied, as the output layer):
    >>> class Tied(nnx.Module):
    ...   def __init__(self):
    ...     self.embed = nnx.Embed(7, 4, rngs=nnx.Rngs(0))
    ...   def __call__(self, tokens):
    ...     return self.embed.attend(jnp.tanh(self.embed(tokens)))
    >>> tied_loss, tied_params = from_nnx(
    ...     Tied(), lambda model, b: model(b['x']).sum((1, 2)))
    >>> p = plan(tied_loss, tied_params, {'x': jnp.zeros((2, 1), int)}, 2)
    >>> [c.method for c in p.layers[('embed',)].calls]
    ['__call__', 'attend']
    >>> p.layers[('embed',)].forms, p.fallback()
    ({'embedding': 'gram'}, {})
  """
  layers, unsupported = _inventory(loss_fn.model(params))

  def traced(p_out, chunk):
    top = jex_core.get_opaque_trace_state(convention=_TRACE_CONVENTION)
    model = loss_fn.model(p_out)
    nodes = dict(nnx.iter_graph(model))
    hooked = [(nodes[path], _plan_hook(layer,
                                       module_hooks.get_path(params, path),
                                       size, top, f'{_TAG}{i}'))
              for i, (path, layer) in enumerate(layers.items())]
    with module_hooks.intercepted(hooked, METHODS):
      return jnp.sum(loss_fn.loss(model, chunk))

  closed = jax.make_jaxpr(traced)(params, chunk)
  _check_loops(layers, jaxpr_deps.loops_around(closed, _TAG))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  owner = {}
  for i, (kpath, _) in enumerate(flat):
    path = key_tuple(kpath)
    if path[:-1] in layers:
      owner[i] = layers[path[:-1]]
  for i in jaxpr_deps.inputs_reaching_outputs(closed, len(flat)):
    if i in owner:
      owner[i].flag("its params are also used outside the layer's calls (e.g. "
                    'read directly as an array)')
  for layer in layers.values():
    if layer.problem is None:
      layer.forms = forms_of(layer, forced)
  return Plan(layers, unsupported)
