"""Per-example robust aggregators: Optax transforms over the example axis.

`winsorized_mean`, `trimmed_mean`, `median_of_means` and `coordinate_median`
take updates with a leading example (or group) axis, go FIRST in
`optax.chain` (as `optax.contrib.differentially_private_aggregate`) and emit
params-shaped updates. Jit the update (run eagerly, each operation of the
order-statistics network is dispatched and compiled on its own):

    >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1, momentum=0.9))
    >>> state = opt.init(params)
    >>> grads = per_example_grads(loss_fn, params, batch)   # leading axis B
    >>> updates, state = jax.jit(opt.update)(grads, state, params)
    >>> updates['layers'][0]['kernel'].shape == params['layers'][0]['kernel'].shape
    True

They are `optax.experimental.aggregating.Aggregator`s too; `init` records the
param shapes and `update` checks every leaf by path (_contract.py):

    >>> from optax.experimental import aggregating
    >>> opt = aggregating.process(optax.identity(), winsorized_mean(4),
    ...                           optax.sgd(0.1))

NaN propagates coordinate-wise, +-inf are clipped like any extreme value; to
skip non-finite steps wrap what comes AFTER the aggregator:

    >>> opt = optax.chain(winsorized_mean(1),
    ...                   optax.apply_if_finite(optax.sgd(0.1), 5))

With `axis_name` (inside `jax.shard_map` or `jax.pmap`) each device passes
its local rows [b, ...] and gets the exact result on the global batch,
receiving (min(b, 2c + 3) + 1) * P values whatever the device count (an
example in `winsorized_mean`).

The contract, factored inputs, weight decay, NaN policy and communication:
docs/design/coordinatewise.md. RM3 / RA3 / M3 are in over_steps.py.
"""

import jax
import jax.numpy as jnp
import optax

from coherence_jax import _checks
from coherence_jax import mesh_axes
from coherence_jax.aggregators import _contract
from coherence_jax.aggregators import across_devices
from coherence_jax.aggregators import order_stats


PerExampleAggregateState = _contract.PerExampleAggregateState


def _across(name, axis_name, reduce_tree, check_global_size):
  """The transform reducing the whole updates pytree across `axis_name`.

  `check_global_size(B, b)` gets the global and the local batch sizes (the
  axis is checked to be bound first: a clear ValueError otherwise).
  """

  def check(size):
    check_global_size(size * across_devices.num_devices(axis_name), size)

  return _contract.per_example_aggregator(name, reduce_tree, check,
                                         whole_tree=True)


def winsorized_mean(c: int,
                    axis_name: mesh_axes.AxisName = None
                    ) -> optax.GradientTransformation:
  """Winsorized mean over the leading (example) axis, coordinate-wise.

  Per coordinate, sort the B values x_(1) <= ... <= x_(B), clip every value to
  [x_(c+1), x_(B-c)] and average. c = 0 is the mean. Needs 2c + 1 <= B
  (checked at update time). The WGD reference code clips to the percentiles
  c and 100 - c with 'nearest' interpolation: at B = 100 that is this rule
  with the same c; at another B, percentile p maps to c = round(p * (B-1)/100).

  References:
    S. Chatterjee, "Coherent Gradients: An Approach to Understanding
    Generalization in Gradient Descent-based Optimization", ICLR 2020,
    arXiv:2002.10657 (winsorized gradient descent, WGD).

  Example:
    >>> opt = optax.chain(winsorized_mean(c=2), optax.sgd(0.1))
    >>> state = opt.init(params)
    >>> step = jax.jit(opt.update)
    >>> updates, state = step(per_example_grads(loss_fn, params, batch),
    ...                       state, params)

    Across the 8 devices of a mesh, each holding B / 8 examples' updates:

    >>> from jax.sharding import PartitionSpec as P
    >>> mesh = jax.make_mesh((8,), ('data',))
    >>> tx = winsorized_mean(2, axis_name='data')
    >>> def step(grads):                   # grads: [B / 8, *param.shape]
    ...   return tx.update(grads, tx.init(params), params)[0]
    >>> grads = per_example_grads(loss_fn, params, batch)   # 16 examples
    >>> sharded = jax.device_put(grads, jax.NamedSharding(mesh, P('data')))
    >>> update = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=P('data'),
    ...                                out_specs=P()))(sharded)
    >>> g = np.sort(grads['layers'][1]['bias'], axis=0)  # one device, numpy
    >>> want = np.clip(g, g[2], g[-3]).mean(0)             # x_(3), x_(B-2)
    >>> bool(np.allclose(update['layers'][1]['bias'], want, atol=1e-6))
    True

  Args:
    c: number of values clipped at each end, per coordinate.
    axis_name: None on one device. Inside `jax.shard_map` / `jax.pmap`, the
      mesh axis (or tuple of axes) the batch is sharded over: each device
      passes its local updates [b, ...] and gets the winsorized mean of the
      global batch (B = b * D, 2c + 1 <= B), receiving
      (min(b, 2c + 3) + 1) * P values per step whatever D (P = number of
      params; schemes in docs/design/across_devices.md).
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  return _order_statistic_transform('winsorized_mean', c, axis_name,
                                    order_stats.winsorized_mean,
                                    across_devices.winsorized_mean)


def trimmed_mean(c: int,
                 axis_name: mesh_axes.AxisName = None
                 ) -> optax.GradientTransformation:
  """Trimmed mean over the leading axis: mean of x_(c+1), ..., x_(B-c).

  References:
    The companion of winsorized GD in S. Chatterjee, "Coherent Gradients: An
    Approach to Understanding Generalization in Gradient Descent-based
    Optimization", ICLR 2020, arXiv:2002.10657.

  Example:
    >>> opt = optax.chain(trimmed_mean(c=2), optax.sgd(0.1))

  Args:
    c: number of values dropped at each end, per coordinate (2c + 1 <= B).
    axis_name: None on one device. Inside `jax.shard_map` / `jax.pmap`, the
      mesh axis (or axes) the batch is sharded over: each device passes its
      local updates [b, ...] and gets the trimmed mean of the global batch
      (B = b * D), receiving (min(b, 2c + 3) + 1) * P values per step
      whatever D, as `winsorized_mean`.
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  return _order_statistic_transform('trimmed_mean', c, axis_name,
                                    order_stats.trimmed_mean,
                                    across_devices.trimmed_mean)


def _as_float(updates):
  """Integer / bool leaves as float32: their (clipped) means are fractions.

  As `median_of_means` and `optax.sgd` give float32 for integer updates.
  """
  def cast(x):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      return x
    return jnp.asarray(order_stats.materialize(x), jnp.float32)
  return jax.tree.map(cast, updates, is_leaf=order_stats.is_lazy)


def _order_statistic_transform(name, c, axis_name, reduce_fn, reduce_across):
  """A per-example transform reducing each leaf with reduce_fn(x, c)."""
  _checks.check_c(c, name)
  c = int(c)
  across_devices.check_axis_name_type(axis_name, name)
  if axis_name is not None:
    return _across(
        name, axis_name, lambda u: reduce_across(_as_float(u), c, axis_name),
        lambda _, local: across_devices.check_c_fits(c, local, axis_name,
                                                     name))

  def check(size):
    _checks.check_c_fits(c, size, name)

  # Small leaves share one network (order_stats.pack_leaves): compile time
  # grows with the number of networks.
  return _contract.per_example_aggregator(
      name, lambda u: order_stats.reduce_leaves(lambda x: reduce_fn(x, c),
                                                _as_float(u)),
      check, whole_tree=True)


def median_of_means(num_groups: int,
                    axis_name: mesh_axes.AxisName = None
                    ) -> optax.GradientTransformation:
  """Splits the B examples into contiguous equal groups; median of group means.

  The median is numpy's: with an even `num_groups` it averages the two middle
  values. `num_groups=1` is the mean. Cheaper equivalent without per-example
  gradients: `per_group_grads(loss_fn, params, batch, k)` + `coordinate_median()`.

  References:
    P. Zielinski, S. Krishnan, S. Chatterjee, "Weak and Strong Gradient
    Directions: Explaining Memorization, Generalization, and Hardness of
    Examples at Scale", arXiv:2003.07422 (median of means, M3).

  Example:
    >>> opt = optax.chain(median_of_means(3), optax.sgd(0.1))

  Args:
    num_groups: number of groups; must divide B.
    axis_name: None on one device. Inside `jax.shard_map` / `jax.pmap`, the
      mesh axis (or axes) the batch is sharded over: the groups are
      contiguous groups of the GLOBAL batch (device d holds rows
      d*b .. (d+1)*b - 1), so the result equals one device's on that batch.
      Each device exchanges sums of chunks of gcd(b, B/k) rows, 2P values
      when each group spans whole devices (docs/design/across_devices.md).
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  if not _checks.is_int(num_groups) or num_groups <= 0:
    raise ValueError(
        f'median_of_means: num_groups must be a positive int, got {num_groups!r}.')
  num_groups = int(num_groups)
  across_devices.check_axis_name_type(axis_name, 'median_of_means')

  def check(size, local=None):
    if size % num_groups:
      where = (f' (the global batch: {local} examples per device x '
               f'{size // local} devices along axis_name={axis_name!r})'
               if local is not None else '')
      raise ValueError(
          f'median_of_means: num_groups={num_groups} does not divide B={size}'
          f'{where}; pass a num_groups that splits the batch into equal '
          'groups.')

  if axis_name is not None:
    return _across('median_of_means', axis_name,
                   lambda u: across_devices.median_of_means(u, num_groups,
                                                            axis_name), check)

  def reduce(x):
    if num_groups == 1:
      return order_stats.mean(x)
    return order_stats.median(order_stats.group_means(x, num_groups))

  return _contract.per_example_aggregator('median_of_means', reduce, check)


def coordinate_median(axis_name: mesh_axes.AxisName = None
                      ) -> optax.GradientTransformation:
  """Coordinate-wise median along the leading axis (numpy convention).

  With `per_group_grads(loss_fn, params, batch, 3)` this is median of means
  with 3 groups at about the cost of one ordinary gradient.

  References:
    P. Zielinski, S. Krishnan, S. Chatterjee, "Weak and Strong Gradient
    Directions: Explaining Memorization, Generalization, and Hardness of
    Examples at Scale", arXiv:2003.07422 (median of means, M3).

  Example:
    >>> opt = optax.chain(coordinate_median(), optax.sgd(0.1))
    >>> g = per_group_grads(loss_fn, params, batch, 4)   # leading axis 4
    >>> updates, state = jax.jit(opt.update)(g, opt.init(params), params)
    >>> updates['layers'][1]['bias'].shape
    (10,)

  Args:
    axis_name: None on one device. Inside `jax.shard_map` / `jax.pmap`, the
      mesh axis (or axes) the rows are sharded over: the median of all
      devices' rows (in device order), (b + 1) * P values per device or
      n * P, whichever is smaller per leaf (docs/design/across_devices.md).
      Feed it few rows (e.g. `per_group_grads(..., axis_name=...)`).
  Returns:
    An `Aggregator` (a `GradientTransformationExtraArgs`): `init(params)`
    records the param shapes; `update(updates, state, params=None)` takes
    updates shaped [B, *param.shape] and returns params-shaped updates.
  """
  across_devices.check_axis_name_type(axis_name, 'coordinate_median')
  if axis_name is not None:
    return _across('coordinate_median', axis_name,
                   lambda u: across_devices.median(u, axis_name),
                   lambda size, local: None)
  return _contract.per_example_aggregator('coordinate_median',
                                         order_stats.median, lambda size: None)


