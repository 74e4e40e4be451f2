"""Calling NNX modules through hooks: the interception ghost norms are built on.

Inside a traced loss, chosen module instances are switched, for that call
only, to a subclass whose `__call__` consults the active hooks; everything else
runs unchanged. A hook gets (module, base_call, args, kwargs) and may call the
module's own `__call__` as a pure function of its params (`pure_apply`), e.g.
inside a `jax.custom_vjp`. Used by `ghost` (per-example norms) and
`dense_per_example` (factored Dense per-example gradients).

Example:
  >>> hooked = [(model.dense1, lambda m, call, args, kw: call(m, *args, **kw))]
  >>> with intercepted(hooked):
  ...   logits = model(x)   # model.dense1 runs through its hook
"""

import contextlib
import contextvars
import functools
import types
from typing import Callable, List, Tuple

import jax
from flax import nnx
from jax.extend import core as jex_core

_HOOKS: contextvars.ContextVar = contextvars.ContextVar(
    'coherence_jax_layer_hooks', default=None)


def _hooked_call(self, *args, **kwargs):
  base_call = type(self)._hooked_base.__call__  # pylint: disable=protected-access
  hooks = _HOOKS.get()
  hook = None if hooks is None else hooks.get(id(self))
  if hook is None:
    return base_call(self, *args, **kwargs)
  return hook(self, base_call, args, kwargs)


@functools.lru_cache(maxsize=None)
def _hooked_class(cls):
  """A subclass of `cls` whose `__call__` consults the active hooks."""
  def body(ns):
    ns.update({'__call__': _hooked_call, '_hooked_base': cls,
               '__module__': cls.__module__, '__qualname__': cls.__qualname__})
  return types.new_class(cls.__name__, (cls,), {}, body)


@contextlib.contextmanager
def intercepted(hooked: List[Tuple[nnx.Module, Callable]]):
  """Routes calls of the given module instances to their hooks; restores."""
  saved = [(m, type(m)) for m, _ in hooked]
  token = _HOOKS.set({id(m): hook for m, hook in hooked})
  try:
    for module, cls in saved:
      module.__class__ = _hooked_class(cls)
    yield
  finally:
    _HOOKS.reset(token)
    for module, cls in saved:
      module.__class__ = cls


def pure_apply(module, base_call, kwargs):
  """apply(p, x): the module's own __call__ on a copy that holds params p."""
  graphdef, pstate, rest = nnx.split(module, nnx.Param, ...)

  def apply(p, x):
    params = jax.tree.map(lambda v: v, pstate)
    nnx.replace_by_pure_dict(params, p)
    copy = nnx.merge(graphdef, params, rest)
    return base_call(copy, x, **kwargs)

  return apply


def get_path(tree, path):
  """tree[path[0]][path[1]]...: a nested dict entry by its key path."""
  for key in path:
    tree = tree[key]
  return tree


def inputs_reaching_outputs(closed_jaxpr, num_watched: int) -> set:
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

