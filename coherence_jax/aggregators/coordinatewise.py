"""Per-example robust aggregators: Optax transforms over the example axis.

Per-example transforms (`winsorized_mean`, `trimmed_mean`, `median_of_means`,
  `coordinate_median`) follow `optax.contrib.differentially_private_aggregate`:
  the updates carry a leading example (or group) axis, the transform must be
  FIRST in `optax.chain`, and it emits ordinary params-shaped updates:

    >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1, momentum=0.9))
    >>> state = opt.init(params)
    >>> grads = per_example_grads(loss_fn, params, batch)   # leading axis B
    >>> updates, state = opt.update(grads, state, params)
    >>> updates['layers'][0]['kernel'].shape == params['layers'][0]['kernel'].shape
    True

  They are `optax.experimental.aggregating.Aggregator`s, so they also work as
  the aggregator of `aggregating.process`:

    >>> from optax.experimental import aggregating
    >>> opt = aggregating.process(optax.identity(), winsorized_mean(4),
    ...                           optax.sgd(0.1))

  `init(params)` records the params' shapes; `update` checks every update
  leaf BY PATH against them (every param present, no extra leaf, shape
  [B, *param.shape]) and names the offending path otherwise (_contract.py).

  The updates may also come from `factored_grads`, whose
  Dense-layer kernels are `OuterRows` factors: the order-statistics network
  then forms each example's outer product on the fly (never materialized),
  which is several times faster.

  Order statistics commute with adding the same vector to every example, so
  `optax.add_decayed_weights(wd)` placed AFTER the aggregator equals the papers'
  weight decay "added to each gradient before the median".

(The transforms over steps, RM3 / RA3 / M3, are in over_steps.py.)

NaN policy: non-finite values propagate, nothing raises inside jit. A NaN among
a coordinate's values makes that coordinate's output NaN (the other
coordinates are unaffected); +-inf are ordered values, clipped or trimmed like
any other extreme (so winsorized_mean(c>=1) of a batch with one +inf example is
finite). To skip such steps put `optax.apply_if_finite` AFTER the aggregator:

    >>> opt = optax.chain(winsorized_mean(1),
    ...                   optax.apply_if_finite(optax.sgd(0.1), 5))

Wrapping the aggregator itself, `optax.apply_if_finite(optax.chain(
winsorized_mean(1), ...))`, cannot work (its skip branch returns zeros shaped
like the per-example input) and raises a ValueError that says so.

`axis_name` is reserved for exact cross-device versions (the `Extremes`
summaries of order_stats.py merge exactly across shards); today a non-None
value raises NotImplementedError.
"""

from typing import Optional

import optax

from coherence_jax import _checks
from coherence_jax.aggregators import _contract
from coherence_jax.aggregators import order_stats


PerExampleAggregateState = _contract.PerExampleAggregateState


def _check_axis_name(axis_name):
  if axis_name is not None:
    raise NotImplementedError(
        f'axis_name={axis_name!r}: cross-device aggregation is not implemented '
        'yet; pass axis_name=None and all-gather the per-example gradients.')


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
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
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
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  return _order_statistic_transform('trimmed_mean', c, axis_name,
                                    order_stats.trimmed_mean)


def _order_statistic_transform(name, c, axis_name, reduce_fn):
  """A per-example transform reducing each leaf with reduce_fn(x, c)."""
  _checks.check_c(c, name)
  _check_axis_name(axis_name)

  def check(size):
    _checks.check_c_fits(c, size, name)

  return _contract.per_example_aggregator(name, lambda x: reduce_fn(x, c),
                                         check)


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
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  if (not isinstance(num_groups, int) or isinstance(num_groups, bool)
      or num_groups <= 0):
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

  return _contract.per_example_aggregator('median_of_means', reduce, check)


def coordinate_median(axis_name: Optional[str] = None
                      ) -> optax.GradientTransformation:
  """Coordinate-wise median along the leading axis (numpy convention).

  With `per_group_grads(loss_fn, params, batch, 3)` this is median of means
  with 3 groups at about the cost of one ordinary gradient.

  Example:
    >>> opt = optax.chain(coordinate_median(), optax.sgd(0.1))
    >>> g = per_group_grads(loss_fn, params, batch, 4)   # leading axis 4
    >>> updates, state = opt.update(g, opt.init(params), params)
    >>> updates['layers'][1]['bias'].shape
    (10,)

  Args:
    axis_name: reserved for multi-device use; must be None for now.
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  _check_axis_name(axis_name)
  return _contract.per_example_aggregator('coordinate_median',
                                         order_stats.median, lambda size: None)


