"""Optax transforms that aggregate gradients robustly.

Two families:

* Per-example transforms (`winsorized_mean`, `trimmed_mean`, `median_of_means`,
  `coordinate_median`) follow `optax.contrib.differentially_private_aggregate`:
  the updates carry a leading example (or group) axis, the transform must be
  FIRST in `optax.chain`, and it emits ordinary params-shaped updates:

    >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1, momentum=0.9))
    >>> grads = per_example_grads(loss_fn, params, batch)   # leading axis B
    >>> updates, state = opt.update(grads, state, params)

  The updates may also come from `dense_per_example.factored_grads`, whose
  Dense-layer kernels are `OuterRows` factors: the order-statistics network
  then forms each example's outer product on the fly (never materialized),
  which is several times faster.

  Order statistics commute with adding the same vector to every example, so
  `optax.add_decayed_weights(wd)` placed AFTER the aggregator equals the papers'
  weight decay "added to each gradient before the median".

* Transforms over steps (`rolling_median`, `rolling_mean`, `periodic_median`)
  take ordinary, already averaged gradients and can sit anywhere in a chain.
  Params change between the buffered steps, so here weight decay does NOT
  commute: to add it to each gradient before the median, put
  `optax.add_decayed_weights` BEFORE `rolling_median` / `rolling_mean`
  (for `periodic_median` params do not change within a window, so either place
  is the same).

NaN policy: non-finite values propagate, nothing raises inside jit. A NaN among
a coordinate's values makes that coordinate's output NaN (the other
coordinates are unaffected); +-inf are ordered values, clipped or trimmed like
any other extreme (so winsorized_mean(c>=1) of a batch with one +inf example is
finite). To skip such steps wrap the optimizer in `optax.apply_if_finite`.

`axis_name` is reserved for exact cross-device versions (the `Extremes`
summaries of order_stats.py merge exactly across shards); today a non-None
value raises NotImplementedError.
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from coherence_jax import order_stats

PyTree = Any


class PerExampleAggregateState(NamedTuple):
  """State of the per-example aggregators: they are stateless."""


def _check_axis_name(axis_name):
  if axis_name is not None:
    raise NotImplementedError(
        f'axis_name={axis_name!r}: cross-device aggregation is not implemented '
        'yet; pass axis_name=None and all-gather the per-example gradients.')


def _check_c(c, name):
  if not isinstance(c, int) or isinstance(c, bool) or c < 0:
    raise ValueError(f'{name}: c must be a non-negative int, got {c!r}.')


def _leading_size(updates: PyTree, params: Optional[PyTree], name: str) -> int:
  """Checks the per-example contract and returns the shared leading size."""
  contract = (f'{name} expects per-example (or per-group) updates: every leaf '
              'has a leading example axis of the same size B, i.e. shape '
              '[B, *param.shape]; it must be first in optax.chain.')
  leaves = jax.tree_util.tree_leaves_with_path(updates, is_leaf=_is_lazy)
  if not leaves:
    raise ValueError(f'{name}: got no update leaves. {contract}')
  sizes = {}
  for path, leaf in leaves:
    key = jax.tree_util.keystr(path) or '<root>'
    if len(leaf.shape if _is_lazy(leaf) else jnp.shape(leaf)) == 0:
      raise ValueError(f'{name}: leaf {key} is a scalar. {contract}')
    sizes[key] = leaf.shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(f'{name}: leading axes differ {sizes}. {contract}')
  if params is not None:
    for (path, leaf), p in zip(leaves, jax.tree.leaves(params)):
      if tuple(leaf.shape[1:]) != tuple(jnp.shape(p)):
        key = jax.tree_util.keystr(path) or '<root>'
        raise ValueError(
            f'{name}: leaf {key} has shape {leaf.shape} for a param of shape '
            f'{jnp.shape(p)}. {contract}')
  return next(iter(sizes.values()))


def _is_lazy(x) -> bool:
  return isinstance(x, order_stats.LazyRows)


def _per_example(name, reduce_fn, check_size) -> optax.GradientTransformation:
  """A stateless transform that reduces the leading axis of every leaf."""

  def init_fn(params):
    del params
    return PerExampleAggregateState()

  def update_fn(updates, state, params=None):
    size = _leading_size(updates, params, name)
    check_size(size)
    return jax.tree.map(reduce_fn, updates, is_leaf=_is_lazy), state

  return optax.GradientTransformation(init_fn, update_fn)


def winsorized_mean(c: int,
                    axis_name: Optional[str] = None
                    ) -> optax.GradientTransformation:
  """Winsorized mean over the leading (example) axis, coordinate-wise.

  Per coordinate, sort the B values x_(1) <= ... <= x_(B), clip every value to
  [x_(c+1), x_(B-c)] and average. c = 0 is the mean. Needs 2c + 1 <= B
  (checked at update time). The WGD reference code clips to the percentiles
  c and 100 - c with 'nearest' interpolation: at B = 100 that is this rule
  with the same c; at another B, percentile p maps to c = round(p * (B-1)/100).

  Example:
    >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1))
    >>> state = opt.init(params)
    >>> updates, state = opt.update(per_example_grads(loss_fn, params, batch),
    ...                             state, params)

  Args:
    c: number of values clipped at each end, per coordinate.
    axis_name: reserved for multi-device use; must be None for now.
  """
  return _order_statistic_transform('winsorized_mean', c, axis_name,
                                    order_stats.winsorized_mean)


def trimmed_mean(c: int,
                 axis_name: Optional[str] = None) -> optax.GradientTransformation:
  """Trimmed mean over the leading axis: mean of x_(c+1), ..., x_(B-c).

  Example:
    >>> opt = optax.chain(trimmed_mean(c=2), optax.sgd(0.1))

  Args:
    c: number of values dropped at each end, per coordinate (2c + 1 <= B).
    axis_name: reserved for multi-device use; must be None for now.
  """
  return _order_statistic_transform('trimmed_mean', c, axis_name,
                                    order_stats.trimmed_mean)


def _order_statistic_transform(name, c, axis_name, reduce_fn):
  """A per-example transform reducing each leaf with reduce_fn(x, c)."""
  _check_c(c, name)
  _check_axis_name(axis_name)

  def check(size):
    if 2 * c + 1 > size:
      raise ValueError(
          f'{name}: c={c} needs at least 2c+1 = {2 * c + 1} examples, '
          f'got B={size}; use c <= {(size - 1) // 2} or a larger batch.')

  return _per_example(name, lambda x: reduce_fn(x, c), check)


def median_of_means(num_groups: int,
                    axis_name: Optional[str] = None
                    ) -> optax.GradientTransformation:
  """Splits the B examples into contiguous equal groups; median of group means.

  The median is numpy's: with an even `num_groups` it averages the two middle
  values. `num_groups=1` is the mean. Cheaper equivalent without per-example
  gradients: `per_group_grads(loss_fn, params, batch, k)` + `coordinate_median()`.

  Example:
    >>> opt = optax.chain(median_of_means(3), optax.sgd(0.1))

  Args:
    num_groups: number of groups; must divide B.
    axis_name: reserved for multi-device use; must be None for now.
  """
  if not isinstance(num_groups, int) or num_groups <= 0:
    raise ValueError(
        f'median_of_means: num_groups must be a positive int, got {num_groups!r}.')
  _check_axis_name(axis_name)

  def check(size):
    if size % num_groups:
      raise ValueError(
          f'median_of_means: num_groups={num_groups} does not divide B={size}; '
          'pass a num_groups that splits the batch into equal groups.')

  def reduce(x):
    if num_groups == 1:
      return order_stats.mean(x)
    return order_stats.median(order_stats.group_means(x, num_groups))

  return _per_example('median_of_means', reduce, check)


def coordinate_median(axis_name: Optional[str] = None
                      ) -> optax.GradientTransformation:
  """Coordinate-wise median along the leading axis (numpy convention).

  With `per_group_grads(loss_fn, params, batch, 3)` this is median of means
  with 3 groups at about the cost of one ordinary gradient.

  Example:
    >>> opt = optax.chain(coordinate_median(), optax.sgd(0.1))
    >>> g = per_group_grads(loss_fn, params, batch, 3)   # leading axis 3
    >>> updates, state = opt.update(g, state, params)
  """
  _check_axis_name(axis_name)
  return _per_example('coordinate_median', order_stats.median, lambda size: None)


# ------------------------------------------------------------ over steps ----


class RollingState(NamedTuple):
  """Ring buffer of the last `window` gradients (leading axis `window`)."""
  buffer: PyTree
  count: jax.Array  # int32 steps seen; 0 means the buffer is not seeded yet.


def _check_window(window, name):
  if not isinstance(window, int) or isinstance(window, bool) or window < 1:
    raise ValueError(f'{name}: window must be a positive int, got {window!r}.')


def _median_over_window(buf: jax.Array) -> jax.Array:
  return order_stats.median(buf)


def _mean_over_window(buf: jax.Array) -> jax.Array:
  # Unrolled adds: a reduce over a short leading axis is slow on XLA:CPU.
  return sum(buf[i] for i in range(buf.shape[0])) / buf.shape[0]


def _rolling(name, window, reduce_fn) -> optax.GradientTransformation:
  _check_window(window, name)

  def init_fn(params):
    buffer = jax.tree.map(
        lambda p: jnp.zeros((window,) + jnp.shape(p), jnp.result_type(p)),
        params)
    return RollingState(buffer=buffer, count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    slot = state.count % window

    def push(buf, g):
      seeded = jnp.broadcast_to(g[None], buf.shape).astype(buf.dtype)
      pushed = jax.lax.dynamic_update_index_in_dim(buf, g.astype(buf.dtype),
                                                   slot, 0)
      return jnp.where(state.count == 0, seeded, pushed)

    buffer = jax.tree.map(push, state.buffer, updates)
    out = jax.tree.map(lambda b, g: reduce_fn(b).astype(g.dtype), buffer,
                       updates)
    return out, RollingState(buffer, optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def rolling_median(window: int = 3) -> optax.GradientTransformation:
  """RM3: median of the current gradient and the previous `window - 1`.

  The ring buffer is seeded with `window` copies of the FIRST gradient seen
  (not with init's argument), so step 0 returns g0, step 1 median(g0, g0, g1).
  Works on ordinary gradients, anywhere in a chain. Put
  `optax.add_decayed_weights` before it to decay each buffered gradient.

  Example:
    >>> opt = optax.chain(rolling_median(3), optax.sgd(0.1))
  """
  return _rolling('rolling_median', window, _median_over_window)


def rolling_mean(window: int = 3) -> optax.GradientTransformation:
  """RA3, the control for RM3: the mean of the same buffered gradients.

  Example:
    >>> opt = optax.chain(rolling_mean(3), optax.sgd(0.1))
  """
  return _rolling('rolling_mean', window, _mean_over_window)


class PeriodicMedianState(NamedTuple):
  """State of `periodic_median`."""
  mini_step: jax.Array     # int32 in [0, window): gradients collected so far.
  gradient_step: jax.Array  # int32 inner optimizer steps taken.
  buffer: PyTree           # [window, ...] gradients of the current window.
  inner_state: Any


def periodic_median(inner: optax.GradientTransformation,
                    window: int = 3) -> optax.GradientTransformation:
  """M3: the inner optimizer steps once every `window` steps, on their median.

  Like `optax.MultiSteps`: gradients of `window` consecutive steps are
  collected; on the last one the inner optimizer updates with their
  coordinate-wise median (momentum never sees the skipped steps). On the other
  steps the updates are zero and the inner state is unchanged.

  Example:
    >>> opt = periodic_median(optax.sgd(0.1), window=3)
  """
  _check_window(window, 'periodic_median')

  def init_fn(params):
    buffer = jax.tree.map(
        lambda p: jnp.zeros((window,) + jnp.shape(p), jnp.result_type(p)),
        params)
    zero = jnp.zeros([], jnp.int32)
    return PeriodicMedianState(zero, zero, buffer, inner.init(params))

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
        gradient_step=jnp.where(last,
                                optax.safe_int32_increment(state.gradient_step),
                                state.gradient_step),
        buffer=buffer,
        inner_state=inner_state)
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)
