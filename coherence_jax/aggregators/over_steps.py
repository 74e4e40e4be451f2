"""Optax transforms over steps: RM3 (rolling median), RA3 (rolling mean), M3.

They take ordinary, already averaged gradients and can sit anywhere in a
chain. Params change between the buffered steps, so weight decay does NOT
commute with them: to add it to each gradient before the median, put
`optax.add_decayed_weights` BEFORE `rolling_median` / `rolling_mean` (for
`periodic_median` params do not change within a window, so either place is
the same).

Buffers are kept in `buffer_dtype(param dtype)`: the param dtype promoted to
at least float32 (float32 for integer params), so a bf16 or int param does not
round the buffered gradients; outputs are in the updates' dtype.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from coherence_jax import _checks
from coherence_jax._tree import PyTree
from coherence_jax._tree import leaves_by_path
from coherence_jax._tree import path_str
from coherence_jax.aggregators import _contract
from coherence_jax.aggregators import order_stats


class RollingState(NamedTuple):
  """Ring buffer of the last `window` gradients (leading axis `window`)."""
  buffer: PyTree
  count: jax.Array  # int32 steps seen; 0 means the buffer is not seeded yet.


def _check_window(window, name):
  if not _checks.is_int(window) or window < 1:
    raise ValueError(f'{name}: window must be a positive int, got {window!r}.')


def _check_updates(name: str, updates: PyTree, buffer: PyTree) -> None:
  """Ordinary gradients at the params' paths, each shaped like its param.

  Raises a one-line ValueError naming the first path at fault: a missing or
  extra leaf, or a leaf of another shape (per-example updates say so).
  """
  want = {p: tuple(b.shape[1:]) for p, b in leaves_by_path(buffer).items()}
  got = leaves_by_path(updates)
  takes = (f'{name} takes ordinary (params-shaped) gradients at the paths of '
           'the params given to init.')
  _contract.check_param_paths(name, want, got, takes)
  for path, leaf in got.items():
    shape, param = tuple(jnp.shape(leaf)), want[path]
    if shape == param:
      continue
    hint = ''
    if len(shape) == len(param) + 1 and shape[1:] == param:
      hint = (' These look like per-example updates; aggregate the examples '
              f'first, e.g. optax.chain(winsorized_mean(c), {name}(...)), or '
              'pass the batch-mean gradient.')
    raise ValueError(
        f'updates: {name} got shape {shape} at {path_str(path)!r} for a param '
        f'of shape {param}.{hint} {takes}')


def buffer_dtype(param_dtype) -> jnp.dtype:
  """The buffer dtype for a param: float dtypes promoted to >= float32.

  >>> buffer_dtype(jnp.bfloat16), buffer_dtype(jnp.int32)
  (dtype('float32'), dtype('float32'))
  """
  if jnp.issubdtype(param_dtype, jnp.inexact):
    return jnp.promote_types(param_dtype, jnp.float32)
  return jnp.dtype(jnp.float32)


def _init_buffer(params: PyTree, window: int) -> PyTree:
  return jax.tree.map(
      lambda p: jnp.zeros((window,) + jnp.shape(p),
                          buffer_dtype(jnp.result_type(p))), params)


def _median_over_window(buf: jax.Array) -> jax.Array:
  return order_stats.median(buf)


def _mean_over_window(buf: jax.Array) -> jax.Array:
  # Unrolled adds: a reduce over a short leading axis is slow on XLA:CPU.
  return sum(buf[i] for i in range(buf.shape[0])) / buf.shape[0]


def _rolling(name, window, reduce_fn,
             skip_until_full: bool) -> optax.GradientTransformation:
  _check_window(window, name)
  window = int(window)
  if not isinstance(skip_until_full, bool):
    raise ValueError(f'{name}: skip_until_full must be True or False, got '
                     f'{skip_until_full!r}.')

  def init_fn(params):
    return RollingState(buffer=_init_buffer(params, window),
                        count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    _check_updates(name, updates, state.buffer)
    slot = state.count % window

    def push(buf, g):
      seeded = jnp.broadcast_to(g[None], buf.shape).astype(buf.dtype)
      pushed = jax.lax.dynamic_update_index_in_dim(buf, g.astype(buf.dtype),
                                                   slot, 0)
      return jnp.where(state.count == 0, seeded, pushed)

    buffer = jax.tree.map(push, state.buffer, updates)
    out = jax.tree.map(lambda b, g: reduce_fn(b).astype(g.dtype), buffer,
                       updates)
    if skip_until_full:  # the buffer holds count + 1 real gradients now
      full = state.count + 1 >= window
      out = jax.tree.map(lambda o: jnp.where(full, o, jnp.zeros_like(o)), out)
    return out, RollingState(buffer, optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def rolling_median(window: int = 3, *, skip_until_full: bool = False
                   ) -> optax.GradientTransformation:
  """RM3: median of the current gradient and the previous `window - 1`.

  The ring buffer is seeded with `window` copies of the FIRST gradient seen
  (not with init's argument), so step 0 returns g0, step 1 median(g0, g0, g1).
  With `skip_until_full=True` (the authors' PyTorch RM3, google-research
  `coherent_gradients`) the first `window - 1` steps return zero updates
  instead: no step is taken until the buffer holds `window` real gradients.
  From step `window - 1` on, both give the same updates.
  Works on ordinary gradients, anywhere in a chain. Put
  `optax.add_decayed_weights` before it to decay each buffered gradient
  (after it, a "skipped" step would still apply the decay).

  References:
    P. Zielinski, S. Krishnan, S. Chatterjee, "Weak and Strong Gradient
    Directions: Explaining Memorization, Generalization, and Hardness of
    Examples at Scale", arXiv:2003.07422 (M3, RM3, RA3).

  Example:
    >>> opt = optax.chain(rolling_median(3), optax.sgd(0.1))
    >>> ref = rolling_median(3, skip_until_full=True)
    >>> state = ref.init(jnp.zeros(2))
    >>> out, state = ref.update(jnp.ones(2), state)
    >>> out.tolist()   # step 0: the buffer holds 1 gradient, no step
    [0.0, 0.0]

  Args:
    window: gradients in the median (the current one included).
    skip_until_full: False: steps 0..window-2 use the seeded buffer (g0
      repeated); True: they return zeros (the reference behaviour).

  Returns:
    A `GradientTransformation` with `RollingState` (buffer in
    `buffer_dtype(param dtype)`); updates keep the incoming updates' dtype.
  """
  return _rolling('rolling_median', window, _median_over_window,
                  skip_until_full)


def rolling_mean(window: int = 3, *, skip_until_full: bool = False
                 ) -> optax.GradientTransformation:
  """RA3, the control for RM3: the mean of the same buffered gradients.

  References:
    P. Zielinski, S. Krishnan, S. Chatterjee, "Weak and Strong Gradient
    Directions: Explaining Memorization, Generalization, and Hardness of
    Examples at Scale", arXiv:2003.07422 (M3, RM3, RA3).

  Example:
    >>> opt = optax.chain(rolling_mean(3), optax.sgd(0.1))

  Args:
    window: gradients in the mean (the current one included).
    skip_until_full: as in `rolling_median`: zero updates until the buffer
      holds `window` gradients (pair it with RM3's setting for a control).

  Returns:
    A `GradientTransformation` with `RollingState`, as `rolling_median`.
  """
  return _rolling('rolling_mean', window, _mean_over_window, skip_until_full)


class PeriodicMedianState(NamedTuple):
  """State of `periodic_median`."""
  mini_step: jax.Array  # int32 in [0, window): gradients collected so far.
  buffer: PyTree        # [window, ...] gradients of the current window.
  inner_state: Any


def periodic_median(inner: optax.GradientTransformation,
                    window: int = 3) -> optax.GradientTransformation:
  """M3: the inner optimizer steps once every `window` steps, on their median.

  Like `optax.MultiSteps`: gradients of `window` consecutive steps are
  collected; on the last one the inner optimizer updates with their
  coordinate-wise median (momentum never sees the skipped steps). On the other
  steps the updates are zero and the inner state is unchanged.

  References:
    P. Zielinski, S. Krishnan, S. Chatterjee, "Weak and Strong Gradient
    Directions: Explaining Memorization, Generalization, and Hardness of
    Examples at Scale", arXiv:2003.07422 (M3, RM3, RA3).

  Example:
    >>> opt = periodic_median(optax.sgd(0.1), window=3)

  Args:
    inner: the optimizer stepped on the median, e.g. `optax.sgd(0.1)`.
    window: steps per median (and per inner step).

  Returns:
    A `GradientTransformation` with `PeriodicMedianState`; updates keep the
    incoming updates' dtype.
  """
  _check_window(window, 'periodic_median')

  def init_fn(params):
    return PeriodicMedianState(jnp.zeros([], jnp.int32),
                               _init_buffer(params, window), inner.init(params))

  def update_fn(updates, state, params=None):
    buffer = jax.tree.map(
        lambda b, g: jax.lax.dynamic_update_index_in_dim(
            b, g.astype(b.dtype), state.mini_step, 0), state.buffer, updates)

    def step(_):
      med = jax.tree.map(lambda b, g: _median_over_window(b).astype(g.dtype),
                         buffer, updates)
      new_updates, inner_state = inner.update(med, state.inner_state, params)
      return new_updates, inner_state

    def skip(_):
      return jax.tree.map(jnp.zeros_like, updates), state.inner_state

    last = state.mini_step == window - 1
    new_updates, inner_state = jax.lax.cond(last, step, skip, None)
    new_state = PeriodicMedianState(
        mini_step=jnp.where(last, 0, state.mini_step + 1).astype(jnp.int32),
        buffer=buffer,
        inner_state=inner_state)
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)
