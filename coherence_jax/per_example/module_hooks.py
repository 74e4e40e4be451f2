"""Calling chosen NNX module instances through hooks (what ghost norms build on).

Inside a traced loss, chosen module instances are switched, for that call
only, to a fresh subclass whose `__call__` runs the instance's hook; everything
else runs unchanged. A hook gets (module, base_call, args, kwargs) and may
call the module's own `__call__` as a pure function of its params
(`pure_apply`), e.g. inside a `jax.custom_vjp`. The hook lives on the
subclass, so no global or context state is consulted while tracing. Used by
`ghost` (per-example norms) and `aggregators.factored_dense` (factored Dense
per-example gradients).

Example:
  >>> hooked = [(model.dense1, lambda m, call, args, kw: call(m, *args, **kw))]
  >>> with intercepted(hooked):
  ...   logits = model(x)   # model.dense1 runs through its hook
"""

import contextlib
import types
from typing import Callable, List, Tuple

import jax
from flax import nnx

Hook = Callable[..., object]


def _hooked_class(cls, hook: Hook):
  """A subclass of `cls` whose `__call__` runs `hook(self, base_call, ...)`."""

  def call(self, *args, **kwargs):
    return hook(self, cls.__call__, args, kwargs)

  def body(ns):
    ns.update({'__call__': call, '__module__': cls.__module__,
               '__qualname__': cls.__qualname__})

  return types.new_class(cls.__name__, (cls,), {}, body)


@contextlib.contextmanager
def intercepted(hooked: List[Tuple[nnx.Module, Hook]]):
  """Routes calls of the given module instances to their hooks; restores."""
  saved = [(module, type(module)) for module, _ in hooked]
  try:
    for module, hook in hooked:
      module.__class__ = _hooked_class(type(module), hook)
    yield
  finally:
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
