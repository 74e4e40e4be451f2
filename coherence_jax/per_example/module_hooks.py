"""Calling chosen NNX module instances through hooks (what ghost norms build on).

Inside a traced loss, chosen module instances are switched, for that call
only, to a fresh subclass whose `__call__` runs the instance's hook; everything
else runs unchanged. A hook gets (module, base_call, args, kwargs) and may
call the module's own `__call__` as a pure function of its params
(`pure_apply`), e.g. inside a `jax.custom_vjp`. The hook lives on the
subclass, so no global or context state is consulted while tracing. Used by
`ghost` (per-example norms) and `factored_dense` (factored Dense per-example
gradients).

Example:
  >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  >>> double = lambda module, call, args, kw: 2 * call(module, *args, **kw)
  >>> x = jnp.ones((1, 2))
  >>> with intercepted([(layer, double)]):
  ...   y = layer(x)   # this call runs through the hook
  >>> bool(jnp.allclose(y, 2 * layer(x))), type(layer) is nnx.Linear
  (True, True)
"""

import contextlib
import types
from typing import Callable, List, Sequence, Tuple

import jax
from flax import nnx

Hook = Callable[..., object]


def _hooked_class(cls, hook: Hook, methods: Sequence[str]):
  """A subclass of `cls` whose `methods` run `hook(self, base_method, ...)`."""

  def hooked(base):
    def method(self, *args, **kwargs):
      return hook(self, base, args, kwargs)
    return method

  def body(ns):
    ns.update({name: hooked(getattr(cls, name)) for name in methods
               if callable(getattr(cls, name, None))})
    ns.update({'__module__': cls.__module__, '__qualname__': cls.__qualname__})

  return types.new_class(cls.__name__, (cls,), {}, body)


@contextlib.contextmanager
def intercepted(hooked: List[Tuple[nnx.Module, Hook]],
                methods: Sequence[str] = ('__call__',)):
  """Routes calls of the given module instances to their hooks; restores.

  A context manager: inside it, calling one of the modules (or another of
  `methods` it has, e.g. `Embed.attend`) runs `hook(module, base_call, args,
  kwargs)` where `base_call` is the class's own method (its `__name__` tells
  which); on exit (also on an exception) every module gets its class back.
  Other instances of the same class are not affected.

  Args:
    hooked: (module instance, hook) pairs.
    methods: the method names routed to the hook, where the class has them.

  Yields:
    None; the hooks are active inside the `with` block.

  Example:
    >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> calls = []
    >>> def count(module, call, args, kwargs):
    ...   calls.append(args[0].shape)
    ...   return call(module, *args, **kwargs)
    >>> with intercepted([(layer, count)]):
    ...   _ = layer(jnp.ones((4, 2)))
    >>> _ = layer(jnp.ones((4, 2)))   # outside: not hooked
    >>> calls
    [(4, 2)]
    >>> embed = nnx.Embed(5, 2, rngs=nnx.Rngs(0))
    >>> names = lambda module, call, args, kwargs: call.__name__
    >>> with intercepted([(embed, names)], methods=('__call__', 'attend')):
    ...   embed(jnp.zeros(3, jnp.int32)), embed.attend(jnp.ones(2))
    ('__call__', 'attend')
  """
  saved = [(module, type(module)) for module, _ in hooked]
  try:
    for module, hook in hooked:
      module.__class__ = _hooked_class(type(module), hook, methods)
    yield
  finally:
    for module, cls in saved:
      module.__class__ = cls


def pure_apply(module, base_call, kwargs):
  """apply(p, x): the module's own __call__ on a copy that holds params p.

  Args:
    module: an NNX module.
    base_call: the function to run, `base_call(module, x, **kwargs)` (e.g.
      the class's `__call__`, as a hook receives it).
    kwargs: keyword arguments passed on to every call.

  Returns:
    `apply(p, x)`, pure in `p` (a dict {param name: array}, possibly
    partial: missing params keep the module's values) and `x`; the module
    itself is not modified.

  Example:
    >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> apply = pure_apply(layer, nnx.Linear.__call__, {})
    >>> p = {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)}
    >>> apply(p, jnp.ones((1, 2)))
    Array([[2., 2., 2.]], dtype=float32)
  """
  graphdef, pstate, rest = nnx.split(module, nnx.Param, ...)

  def apply(p, x):
    params = jax.tree.map(lambda v: v, pstate)
    nnx.replace_by_pure_dict(params, p)
    copy = nnx.merge(graphdef, params, rest)
    return base_call(copy, x, **kwargs)

  return apply


def get_path(tree, path):
  """tree[path[0]][path[1]]...: a nested dict entry by its key path.

  Args:
    tree: nested dicts (or sequences).
    path: a tuple of keys.

  Returns:
    The entry; `tree` itself for the empty path.

  Example:
    >>> get_path({'layers': {0: {'kernel': 'K'}}}, ('layers', 0, 'kernel'))
    'K'
  """
  for key in path:
    tree = tree[key]
  return tree
