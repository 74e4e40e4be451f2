"""Pytree names shared by the package: the PyTree alias and key-path names."""

from typing import Any, Callable, Tuple

import jax

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


def key_name(key) -> Any:
  """The plain name of one key-path entry: dict key, attribute or index."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return getattr(key, attr)
  return key


def key_tuple(path) -> Tuple[Any, ...]:
  """A key path as a tuple of plain names: ('dense', 'kernel')."""
  return tuple(key_name(k) for k in path)


def path_str(path) -> str:
  """A key path (or tuple of names) as 'dense/kernel'; '<root>' when empty.

  >>> path_str(('layers', 0, 'kernel'))
  'layers/0/kernel'
  """
  return '/'.join(str(key_name(k)) for k in path) or '<root>'


def leaves_by_path(tree: PyTree, is_leaf=None):
  """{path tuple: leaf} of a pytree, in flattening order."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {key_tuple(p): leaf for p, leaf in flat}
