"""The package's import graph has no cycle; top-level names stay public."""

import ast
import pathlib

import coherence_jax as cj

PACKAGE = pathlib.Path(cj.__file__).parent


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph():
  """{module: set of coherence_jax modules it imports} (every import, ast)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        # `from pkg import sub` depends on the submodule; `from mod import f`
        # on the module.
        targets = [f'{node.module}.{a.name}'
                   if f'{node.module}.{a.name}' in modules else node.module
                   for a in node.names]
      else:
        continue
      deps |= {t for t in targets if t in modules and t != name}
    graph[name] = deps
  return graph


def find_cycle(graph):
  """A list of modules forming a cycle, or None (iterative DFS)."""
  state = {}
  for root in graph:
    if root in state:
      continue
    stack = [(root, iter(sorted(graph[root])))]
    state[root], path = 1, [root]
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        state[node] = 2
        stack.pop()
        path.pop()
      elif state.get(child) == 1:
        return path[path.index(child):] + [child]
      elif child not in state:
        state[child] = 1
        path.append(child)
        stack.append((child, iter(sorted(graph[child]))))
  return None


def test_no_import_cycle():
  graph = import_graph()
  assert 'coherence_jax.coherence' in graph  # the walk found the modules
  assert 'coherence_jax.per_example.ghost' in graph['coherence_jax.coherence']
  assert find_cycle(graph) is None, find_cycle(graph)


def test_cycle_finder_finds_a_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_public_surface():
  for name in ('coherence_stats', 'CoherenceStats', 'per_example_grads',
               'per_group_grads', 'per_example_sq_norms', 'from_nnx',
               'winsorized_mean_grad', 'trimmed_mean_grad', 'aggregators',
               'models'):
    assert hasattr(cj, name), name
  for name in ('winsorized_mean', 'trimmed_mean', 'median_of_means',
               'coordinate_median', 'rolling_median', 'rolling_mean',
               'periodic_median', 'factored_grads'):
    assert hasattr(cj.aggregators, name), name


def test_no_unjitted_twins_or_context_vars():
  for path in PACKAGE.rglob('*.py'):
    text = path.read_text()
    assert '_unjitted' not in text, path
    assert 'ContextVar' not in text, path
