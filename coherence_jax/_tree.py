"""Pytree names shared by the package: the PyTree alias and key-path names.

Example:
  >>> tree = {'dense': {'kernel': 0}}
  >>> path, _ = jax.tree_util.tree_flatten_with_path(tree)[0][0]
  >>> key_tuple(path), path_str(path)
  (('dense', 'kernel'), 'dense/kernel')
"""

from typing import Any, Callable, Tuple

import jax

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


def key_name(key) -> Any:
  """The plain name of one key-path entry: dict key, attribute or index.

  Args:
    key: a `jax.tree_util` key (DictKey, GetAttrKey, SequenceKey, ...) or a
      plain name, which is returned as is.

  Returns:
    The dict key, attribute name or sequence index held by `key`.

  Example:
    >>> tu = jax.tree_util
    >>> key_name(tu.DictKey('kernel')), key_name(tu.SequenceKey(0))
    ('kernel', 0)
  """
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return getattr(key, attr)
  return key


def key_tuple(path) -> Tuple[Any, ...]:
  """A key path as a tuple of plain names: ('dense', 'kernel').

  Args:
    path: a key path from `jax.tree_util.tree_flatten_with_path` (or a tuple
      of plain names).

  Returns:
    The tuple of `key_name`s.

  Example:
    >>> [key_tuple(p) for p, _ in
    ...  jax.tree_util.tree_flatten_with_path({'a': [1, 2]})[0]]
    [('a', 0), ('a', 1)]
  """
  return tuple(key_name(k) for k in path)


def path_str(path) -> str:
  """A key path (or tuple of names) as 'dense/kernel'; '<root>' when empty.

  Args:
    path: a key path or a tuple of plain names.

  Returns:
    The names joined by '/', or '<root>' for the empty path (a bare leaf).

  Example:
    >>> path_str(('layers', 0, 'kernel'))
    'layers/0/kernel'
    >>> path_str(())
    '<root>'
  """
  return '/'.join(str(key_name(k)) for k in path) or '<root>'


def leaves_by_path(tree: PyTree, is_leaf=None):
  """{path tuple: leaf} of a pytree, in flattening order.

  Args:
    tree: any pytree.
    is_leaf: optional predicate, as for `jax.tree_util.tree_flatten`.

  Returns:
    A dict from `key_tuple` paths to leaves.

  Example:
    >>> leaves_by_path({'b': 1, 'a': {'w': 2}})
    {('a', 'w'): 2, ('b',): 1}
  """
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {key_tuple(p): leaf for p, leaf in flat}
