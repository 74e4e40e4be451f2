"""Which module types ghost norms know, and how: the rule registry.

Every module that holds params is handled one of three ways in the single
backward pass of ghost norms:
  - a built-in rule for flax's own layers (Linear, LinearGeneral, Einsum,
    Conv, Embed, the norm layers), also for their subclasses as long as the
    methods the rule relies on are not overridden;
  - a rule registered with `register_ghost_rule` for a module type of one's
    own (the role of Opacus' `register_grad_sampler`);
  - otherwise, for a module without param-holding submodules, the per-module
    fallback: that module's per-example param gradients are formed inside the
    same backward pass (vmap over its examples, a few at a time), exact for
    any module whose output for an example depends on that example only.
Params of a module with param-holding submodules that are read outside any
submodule (a raw position table in the root model) have no rule; `auto`
computes them by vmap.

Example (Gemma's RMSNorm, scale used as 1 + scale: its per-example squared
gradient norm is ‖Σ_t δ_t ⊙ x̂_t‖², with x̂ the normalized input):
  >>> class GemmaRMSNorm(nnx.Module):
  ...   def __init__(self, dim):
  ...     self.scale = nnx.Param(jnp.zeros(dim))
  ...   def __call__(self, x):
  ...     var = jnp.mean(x * x, axis=-1, keepdims=True)
  ...     return x * jax.lax.rsqrt(var + 1e-6) * (1 + self.scale.value)
  >>> def rms_sq_norms(module, params, x, dz):
  ...   normed = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
  ...   g = (dz * normed).reshape(x.shape[0], -1, x.shape[-1]).sum(1)
  ...   return {'scale': (g * g).sum(-1)}
  >>> register_ghost_rule(GemmaRMSNorm, rms_sq_norms)
  >>> lookup(GemmaRMSNorm(4)).kind
  'registered'
  >>> unregister_ghost_rule(GemmaRMSNorm)
  >>> lookup(GemmaRMSNorm(4)).kind   # back to the per-module fallback
  'module'
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import flax.linen as linen
from flax import nnx

# A registered rule: rule(module, params, x, dz) -> {param name: [B] per-example
# squared norms}; `params` {name: float32 array} are the values of this call
# (read them there, not from `module`), x the input, dz the output cotangent.
SqNormsRule = Callable[..., Dict[str, object]]


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a module type's per-example norms are computed.

  Attributes:
    kind: 'linear', 'conv', 'embed', 'norm' (built-in rules), 'registered'
      (a user's `sq_norms`) or 'module' (the per-module fallback).
    params: the param attribute names the rule covers (None: every param the
      module holds directly).
    methods: the methods routed through the rule; a subclass that overrides
      one of them does not inherit the rule.
    sq_norms: the registered function (kind 'registered').
  """
  kind: str
  params: Optional[Tuple[str, ...]] = None
  methods: Tuple[str, ...] = ('__call__',)
  sq_norms: Optional[SqNormsRule] = None


BUILTIN = {
    nnx.Linear: Rule('linear', ('kernel', 'bias')),
    nnx.LinearGeneral: Rule('linear', ('kernel', 'bias')),
    nnx.Einsum: Rule('linear', ('kernel', 'bias')),
    nnx.Conv: Rule('conv', ('kernel', 'bias')),
    nnx.Embed: Rule('embed', ('embedding',), ('__call__', 'attend')),
    nnx.LayerNorm: Rule('norm', ('scale', 'bias')),
    nnx.GroupNorm: Rule('norm', ('scale', 'bias')),
    nnx.RMSNorm: Rule('norm', ('scale', 'bias')),
    nnx.BatchNorm: Rule('norm', ('scale', 'bias')),
}
MODULE_FALLBACK = Rule('module')
_REGISTERED: Dict[type, Rule] = {}

SUPPORTED_NAMES = ('nnx.Linear, LinearGeneral, Einsum, Conv, Embed (lookup and '
                   'attend), LayerNorm, GroupNorm, RMSNorm, BatchNorm '
                   '(inference mode), their subclasses that keep __call__, '
                   'and types given to register_ghost_rule')


def register_ghost_rule(module_type: type,
                        sq_norms: Optional[SqNormsRule] = None, *,
                        methods: Tuple[str, ...] = ('__call__',)) -> None:
  """Tells ghost norms how to get per-example norms of `module_type`'s params.

  `sq_norms(module, params, x, dz)` returns {param name: [B] squared norms of
  the per-example gradients}, where x is the call's input (leading example
  axis B), dz the cotangent of its output, and params {name: float32 array}
  the values of this call. The layer's batch gradient (S) comes from the
  ordinary backward pass. With `sq_norms=None` the module gets the per-module
  fallback (its per-example param gradients, formed a few examples at a time
  inside the same backward pass); its params must be direct attributes and
  it must hold no param-holding submodules.
  Registering the same type again replaces its rule; subclasses use the rule
  where they do not override `methods`.

  Args:
    module_type: an `nnx.Module` (or `flax.linen.Module`) subclass whose
      params are its own (direct attributes, or its own `self.param`s).
    sq_norms: the rule, or None for per-example gradients of the module.
    methods: the methods whose calls the rule handles (input first).

  Raises:
    ValueError: `module_type` is not an nnx.Module subclass, or `sq_norms` is
      not callable.

  Example:
    >>> register_ghost_rule(int, None)
    Traceback (most recent call last):
    ValueError: module_type: expected an nnx.Module or flax.linen.Module ...
  """
  if not (isinstance(module_type, type) and
          issubclass(module_type, (nnx.Module, linen.Module))):
    raise ValueError(
        'module_type: expected an nnx.Module or flax.linen.Module subclass, '
        'got '
        f'{getattr(module_type, "__name__", module_type)}; register the class '
        'of the layer (e.g. register_ghost_rule(MyRMSNorm, rule)).')
  if sq_norms is not None and not callable(sq_norms):
    raise ValueError('sq_norms: pass a function (module, params, x, dz) -> '
                     '{param name: [B] squared norms}, or None.')
  kind = 'module' if sq_norms is None else 'registered'
  _REGISTERED[module_type] = Rule(kind, None, tuple(methods), sq_norms)


def registered(module_type: type) -> Optional[Rule]:
  """The rule registered for exactly `module_type`, or None."""
  return _REGISTERED.get(module_type)


def unregister_ghost_rule(module_type: type) -> None:
  """Removes a rule given to `register_ghost_rule` (no-op if none).

  Example:
    >>> unregister_ghost_rule(nnx.Linear)   # built-in rules stay
    >>> lookup(nnx.Linear(2, 3, rngs=nnx.Rngs(0))).kind
    'linear'
  """
  _REGISTERED.pop(module_type, None)


def _keeps(cls: type, base: type, methods) -> bool:
  return all(getattr(cls, m, None) is getattr(base, m, None) for m in methods)


def lookup(module) -> Rule:
  """The rule for `module`: registered, built-in, or the per-module fallback.

  A registered rule of the module's class (or of a base class whose `methods`
  it keeps) wins over a built-in one; a subclass of a built-in layer that
  overrides `__call__` (or `attend` for Embed) gets the per-module fallback,
  since the built-in rule would describe the parent's computation.

  Args:
    module: an NNX module.

  Returns:
    Its `Rule`.

  Example:
    >>> class ScaledEmbed(nnx.Embed):
    ...   def __call__(self, x):
    ...     return super().__call__(x) * jnp.sqrt(self.features)
    >>> class Plain(nnx.Linear):
    ...   pass
    >>> [lookup(m).kind for m in (ScaledEmbed(5, 4, rngs=nnx.Rngs(0)),
    ...                           Plain(2, 3, rngs=nnx.Rngs(0)))]
    ['module', 'linear']
  """
  for base in type(module).__mro__:
    for table in (_REGISTERED, BUILTIN):
      rule = table.get(base)
      if rule is not None and _keeps(type(module), base, rule.methods):
        return rule
  return MODULE_FALLBACK
