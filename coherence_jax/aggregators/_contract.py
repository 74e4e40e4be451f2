"""The per-example contract: what the per-example aggregators accept, checked.

A per-example aggregator takes updates whose every leaf has shape
[B, *param.shape] (one B for all leaves, the params' paths) and returns
params-shaped updates. It records the params' shapes at `init` and checks the
updates against them BY PATH at `update`, so `params=None` at update is fine.
The shapes are a static pytree node (`ParamShapes`, no array leaves): they
stay static under jit, cost no memory, and checkpointing skips them (Orbax
refuses zero-size arrays, the other way to keep a shape static); restore an
optimizer state with the `init` state as the target, as usual.

The transforms are `optax.experimental.aggregating.Aggregator`s where the
installed optax has that module (optax >= 0.2.5), so they work both first in
`optax.chain` and as the aggregator of `aggregating.process(pre, agg, post)`;
otherwise plain `optax.GradientTransformationExtraArgs`.
"""

import dataclasses
import sys
from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

from coherence_jax._tree import PyTree
from coherence_jax._tree import leaves_by_path
from coherence_jax._tree import path_str
from coherence_jax.aggregators import order_stats

try:  # optax >= 0.2.5
  from optax.experimental import aggregating as _aggregating
  Aggregator = _aggregating.Aggregator
except ImportError:  # pragma: no cover - older optax
  _aggregating = None
  Aggregator = optax.GradientTransformationExtraArgs


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ParamShapes:
  """The params' shapes by path: a static pytree node (hashable, no leaves).

  Attributes:
    shapes: ((path, shape), ...) in flattening order; a path is a tuple of
      plain names (`_tree.key_tuple`), e.g. ('dense', 'kernel').
  """
  shapes: Tuple[Tuple[Tuple[Any, ...], Tuple[int, ...]], ...]

  @classmethod
  def of(cls, params: PyTree) -> 'ParamShapes':
    return cls(tuple((path, tuple(jnp.shape(leaf)))
                     for path, leaf in leaves_by_path(params).items()))

  def as_dict(self) -> Dict[Tuple[Any, ...], Tuple[int, ...]]:
    return dict(self.shapes)


class PerExampleAggregateState(NamedTuple):
  """State of the per-example aggregators: the params' shapes, nothing else.

  Attributes:
    param_shapes: a `ParamShapes` (static: no array leaves).
  """
  param_shapes: ParamShapes


def contract(name: str) -> str:
  """The sentence every contract error ends with."""
  return (f'{name} aggregates per-example (or per-group) updates: every leaf '
          'has shape [B, *param.shape], one B for all leaves, at the paths of '
          'the params given to init. It must be FIRST in optax.chain (or the '
          'aggregator of optax.experimental.aggregating.process), fed e.g. '
          'coherence_jax.per_example_grads(loss_fn, params, batch).')


def init_state(params: PyTree, name: str) -> PerExampleAggregateState:
  """Records the params' shapes; raises if there are none to record."""
  if not jax.tree.leaves(params):
    raise ValueError(
        f'params: {name}.init got {params!r}, a pytree without leaves; pass '
        'the params (their shapes are recorded to check the per-example '
        'updates at update time).')
  return PerExampleAggregateState(ParamShapes.of(params))


def _paths_list(paths) -> str:
  shown = ', '.join(repr(path_str(p)) for p in paths[:5])
  return shown + (f' (and {len(paths) - 5} more)' if len(paths) > 5 else '')


def check_param_paths(name: str, want, got, fix: str) -> None:
  """Raises a one-line ValueError for a param path missing from `got` or a
  path of `got` that is no param (`want`, `got`: {path: shape or leaf}).

  Example:
    >>> check_param_paths('rm3', {('w',): (2,)}, {}, 'Pass gradients.')
    Traceback (most recent call last):
    ValueError: updates: rm3 got no update for the param(s) 'w' (shape (2,)). ...
  """
  missing = [p for p in want if p not in got]
  if missing:
    raise ValueError(
        f'updates: {name} got no update for the param(s) {_paths_list(missing)}'
        f' (shape {tuple(want[missing[0]])}). {fix}')
  extra = [p for p in got if p not in want]
  if extra:
    raise ValueError(
        f'updates: {name} got update leaves {_paths_list(extra)} at paths that '
        f'are not params. {fix}')


def check_updates(updates: PyTree, state, name: str) -> int:
  """Checks `updates` against the recorded shapes; returns B.

  Raises:
    ValueError: naming the first offending path: a missing or extra leaf, a
      leaf not shaped [B, *param.shape], leading sizes that differ, B = 0.
  """
  if not isinstance(state, PerExampleAggregateState):
    raise ValueError(
        f'state: {name}.update got a {type(state).__name__}, not the '
        f'PerExampleAggregateState of {name}.init(params). {contract(name)}')
  want = state.param_shapes.as_dict()
  got = leaves_by_path(updates, is_leaf=order_stats.is_lazy)
  check_param_paths(name, want, got, contract(name))
  sizes = {}
  for path, leaf in got.items():
    shape = tuple(leaf.shape if order_stats.is_lazy(leaf) else jnp.shape(leaf))
    param = tuple(want[path])
    if len(shape) != len(param) + 1 or shape[1:] != param:
      needed = '(B' + ''.join(f', {d}' for d in param) + (')' if param
                                                           else ',)')
      raise ValueError(
          f'updates: {name} got shape {shape} at {path_str(path)!r} for a param '
          f'of shape {param}; it needs {needed}. {contract(name)}')
    sizes[path_str(path)] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(
        f'updates: {name} got leading axes that differ {sizes}. '
        f'{contract(name)}')
  size = next(iter(sizes.values()))
  if size == 0:
    raise ValueError(f'updates: {name} got B = 0 examples. {contract(name)}')
  return size


def check_not_under_apply_if_finite(name: str) -> None:
  """Raises a clear error when traced inside `optax.apply_if_finite`.

  apply_if_finite's skip branch returns zeros shaped like ITS input updates,
  per-example here, so `lax.cond` would fail with "branches must have equal
  output types" (even on finite input: both branches are traced). Detected by
  the optax frame on the call stack (trace-time only, a few frames deep).
  """
  for _ in _optax_frames(sys._getframe(1), 'do_update',  # pylint: disable=protected-access
                         '_conditionality.py'):
    raise ValueError(
          f'{name} cannot run inside optax.apply_if_finite: on a skipped step '
          'apply_if_finite returns zeros shaped like its input updates, which '
          'are per-example [B, *param.shape] here, not params-shaped. Put '
          f'apply_if_finite after the aggregator: optax.chain({name}(...), '
          'optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=5)). '
          'A NaN in any example then skips the step (NaN propagates through '
          'the aggregators); +-inf alone may be clipped away by a robust one.')


def _optax_frames(start, function: str, file_suffix: str):
  """The frames of optax's `function` (in a file ending `file_suffix`) on the
  call stack from `start` outwards (at most 64 frames deep)."""
  frame = start
  for _ in range(64):
    if frame is None:
      return
    code = frame.f_code
    if (code.co_name == function and 'optax' in code.co_filename
        and code.co_filename.endswith(file_suffix)):
      yield frame
    frame = frame.f_back


def _chain_frames(start):
  """(kind, earlier states) of every optax chain that is running `start`.

  `optax.chain` and `optax.named_chain` call their transforms in order from
  one `update_fn` frame; while transform i runs, that frame holds the i
  states already updated (`new_state`) and all old states (`state`).
  """
  for frame in _optax_frames(start, 'update_fn', '_combining.py'):
    local = frame.f_locals
    done, state = local.get('new_state'), local.get('state')
    if isinstance(done, list) and isinstance(state, (tuple, list)):
      yield 'optax.chain', [(str(i), s) for i, s in
                            enumerate(state[:len(done)])]
    elif isinstance(done, dict) and isinstance(state, dict):
      names = [n for n, _ in local.get('transforms', ())][:len(done)]
      yield 'optax.named_chain', [(repr(n), state[n]) for n in names
                                  if n in state]


def check_first_in_chain(name: str, state: PerExampleAggregateState,
                         size: int) -> None:
  """Raises when an earlier transform of the chain keeps per-param state.

  A transform before the aggregator that accumulates updates (the momentum of
  `optax.sgd(momentum=...)`, `optax.trace`, Adam's moments, `optax.ema`) is
  fed the per-example updates: its state broadcasts to [B, *param.shape] and
  the updates are wrong from the second step on. Detected at trace time from
  the state of the transforms before this one in the running `optax.chain` /
  `optax.named_chain` (nested chains too): an array leaf shaped like a param
  (ndim >= 1) or like a per-example update. Stateless transforms and scalar
  state (a schedule's step count) pass.
  """
  shapes = [tuple(s) for s in state.param_shapes.as_dict().values()]
  suspect = {s for s in shapes if s} | {(size,) + s for s in shapes}
  for kind, earlier in _chain_frames(sys._getframe(1)):  # pylint: disable=protected-access
    for position, old_state in earlier:
      for path, leaf in jax.tree_util.tree_flatten_with_path(old_state)[0]:
        if tuple(jnp.shape(leaf)) in suspect:
          raise ValueError(
              f'{name} comes after transform {position} of {kind}, which '
              'keeps state shaped like the params (its state'
              f'{jax.tree_util.keystr(path)} has shape '
              f'{tuple(jnp.shape(leaf))}; e.g. '
              'the momentum of optax.sgd(momentum=...), optax.trace, Adam): '
              'fed per-example updates, that state takes their [B, ...] shape '
              f'and the updates are wrong from step 2 on. Put {name} before '
              'it. ' + contract(name))


def per_example_aggregator(
    name: str, reduce_fn: Callable[[jax.Array], jax.Array],
    check_size: Callable[[int], None], *,
    whole_tree: bool = False) -> optax.GradientTransformation:
  """An `Aggregator` reducing the leading axis of every (checked) leaf.

  Args:
    name: the public name, used in errors.
    reduce_fn: maps one leaf [B, ...] (array or LazyRows) to [...]; with
      `whole_tree`, maps the whole updates pytree to the params-shaped one
      (cross-device reductions batch their collectives over the leaves).
    check_size: raises a ValueError when B does not suit the aggregator.
    whole_tree: whether `reduce_fn` takes the whole pytree.

  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): init records the
    params' shapes; update checks and reduces; extra args are ignored.
  """

  def init_fn(params):
    return init_state(params, name)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    check_not_under_apply_if_finite(name)
    size = check_updates(updates, state, name)
    check_first_in_chain(name, state, size)
    check_size(size)
    if whole_tree:
      return reduce_fn(updates), state
    return jax.tree.map(reduce_fn, updates, is_leaf=order_stats.is_lazy), state

  return Aggregator(init_fn, update_fn)
