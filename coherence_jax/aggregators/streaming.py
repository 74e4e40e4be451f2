"""Winsorized / trimmed mean gradients, streamed over micro-batches.

Same result as `aggregators.winsorized_mean(c)` / `trimmed_mean(c)` applied to
all B per-example gradients, but the [B, P] per-example gradients never exist.
Two passes over the batch, each a `lax.scan` over micro-batches:
  1. the clipping bounds x_(c+1), x_(B-c) per coordinate: the c+1 largest and
     c+1 smallest values, folded micro-batch by micro-batch
     (`order_stats.threshold_fold`);
  2. the per-example gradients again, accumulating sum(clip(g, lo, hi))
     (trimmed: the same sum in >= float32, then minus c lo + c hi,
     `order_stats.trimmed_from_clipped`).
Pass 2 recomputes the gradients (about 2x the compute of one pass) so that no
per-example quantity is kept: peak memory is about
(microbatch_size + 2c + 3) x params and does not grow with B. Gradients come
from `per_example.factored_dense.factored_grads`: Dense-layer kernels stay as
factors and each example's outer product is formed inside the fused selection
loop. With B <= microbatch_size and B <= order_stats.folds.MAX_UNROLLED_ROWS,
one pass and the single fused network of `order_stats.winsorized_mean` are used
instead.

With `axis_name` (inside `jax.shard_map` with the batch sharded over that mesh
axis, or inside `jax.pmap`) each device streams its local examples: its bounds
registers are merged into the global bounds (`across_devices.global_bounds`:
an all_to_all of coordinate slices then an all_gather of the bounds,
(2(c+1) + 2) * P values received at any D, or an all_gather of the registers,
2(c+1) * D * P, where that is fewer), the locally clipped sums are psum-ed
(P values, trimmed too), and every device returns the single-device result on the global batch
(device d holds rows d*b .. (d+1)*b-1; B = b * D), invariant over the axis. Passing a sharded batch inside
`jax.shard_map` without `axis_name` is a ValueError (the gradients with respect
to the replicated params would come back summed over devices).
"""

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import mesh_axes
from coherence_jax import microbatch
from coherence_jax._tree import PyTree
from coherence_jax.aggregators import across_devices
from coherence_jax.aggregators import order_stats
from coherence_jax.per_example import factored_dense


def _check(name, c, size, microbatch_size):
  _checks.check_c(c, name)
  _checks.check_c_fits(c, size, name)
  if microbatch_size is None:
    raise ValueError(f'microbatch_size: {name} needs a positive int.')
  _checks.check_microbatch_size(microbatch_size)


def _setup(name, loss_fn, params, batch, c, microbatch_size, axis_name):
  """Checks the arguments; returns (params cast for local grads, B_local, B).

  With `axis_name`, B = B_local * D over the devices along the axis and the
  params are cast to vary over it, so each device's gradients are its own
  examples' (not summed over devices). A batch sharded inside
  `jax.shard_map` without `axis_name` is an error (see
  `mesh_axes.check_axis_name`).
  """
  local = _checks.check_per_example_loss(loss_fn, params, batch)
  _checks.check_c(c, name)
  across_devices.check_axis_name_type(axis_name, name)
  mesh_axes.check_axis_name(axis_name, batch)
  size = local
  if axis_name is not None:
    size = across_devices.check_c_fits(c, local, axis_name, name)
  _check(name, c, size, microbatch_size)
  return mesh_axes.as_varying(params, axis_name), local, size


def _over_microbatches(loss_fn, params, batch, microbatch_size, carry, fold):
  """Folds fold(carry, grads) over the micro-batches' factored grads.

  The carry is cast to vary like the params (inside `jax.shard_map` with
  `axis_name`, the scan's carry type must not change).
  """
  return microbatch.microbatched(
      lambda acc, chunk: fold(
          acc, factored_dense.factored_grads(loss_fn, params, chunk)),
      batch, microbatch_size, combine='fold',
      init=order_stats.vary_like(carry, params))


def _row_like(params):
  """The per-example gradients' leaves as shapes ([1, *param.shape])."""
  return jax.tree.map(
      lambda p: jax.ShapeDtypeStruct((1,) + jnp.shape(p), jnp.result_type(p)),
      params)


def _inputs(grads):
  """The gradients' leaves packed into few inputs (order_stats.pack_leaves).

  Small leaves share one network per dtype: the number of unrolled networks,
  and so the compile time, does not grow with the number of leaves.
  """
  return order_stats.pack_leaves(grads)[0]


def _streamed_registers(loss_fn, params, batch, c, microbatch_size):
  """Per packed input the threshold registers (c+1 largest, c+1 smallest)."""
  init = [order_stats.threshold_init(s.shape, s.dtype, c)
          for s in order_stats.packed_shapes(_row_like(params))]

  def fold(regs, grads):
    return [order_stats.threshold_fold(r, x)
            for r, x in zip(regs, _inputs(grads))]

  return _over_microbatches(loss_fn, params, batch, microbatch_size, init, fold)


def streamed_bounds(loss_fn, params: PyTree, batch: PyTree, c: int,
                    microbatch_size: int,
                    axis_name: mesh_axes.AxisName = None) -> list:
  """Per packed input (x_(c+1), x_(B-c)) of the per-example gradients.

  Traceable. The inputs are `order_stats.pack_leaves` of the gradients
  (`order_stats.unpacker(_row_like(params))` maps per-input results back to
  params). With `axis_name` (params already cast to vary over it), the
  bounds of the global batch (`across_devices.global_bounds`: per
  coordinate 2(c+1) + 2 values received, or 2(c+1) * D where fewer),
  invariant over the axis.
  """
  regs = _streamed_registers(loss_fn, params, batch, c, microbatch_size)
  if axis_name is None:
    return [order_stats.thresholds_from(r) for r in regs]
  extremes = [(jnp.stack(r[0]), jnp.stack(r[1])) for r in regs]
  return across_devices.global_bounds(
      order_stats.packed_shapes(_row_like(params)), extremes, c, axis_name)


def _one_pass(reduce_fn, loss_fn, params, batch):
  grads = factored_dense.factored_grads(loss_fn, params, batch)
  return order_stats.reduce_leaves(reduce_fn, grads)


def _small(size, microbatch_size):
  return size <= min(microbatch_size, order_stats.folds.MAX_UNROLLED_ROWS)


def _psum(tree, axis_name):
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def winsorized_mean_grad(loss_fn, params: PyTree, batch: PyTree, *, c: int,
                         microbatch_size: int,
                         axis_name: mesh_axes.AxisName = None) -> PyTree:
  """Winsorized mean of the per-example gradients, in bounded memory.

  Equals `winsorized_mean(c)` over `per_example_grads(loss_fn, params, batch)`.

  References:
    S. Chatterjee, "Coherent Gradients: An Approach to Understanding
    Generalization in Gradient Descent-based Optimization", ICLR 2020,
    arXiv:2002.10657 (winsorized gradient descent, WGD).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis.
    c: values clipped at each end, per coordinate (2c + 1 <= B).
    microbatch_size: examples whose gradients are formed at once.
    axis_name: None on one device. Inside `jax.shard_map` / `jax.pmap` with
      the batch sharded over a mesh axis (or axes), that axis: each device
      streams its local examples into bounds registers, merged into the
      global bounds ((2(c+1) + 2) * P values received at any D, see
      `across_devices.global_bounds`) and the locally clipped sums are
      psum-ed (P values). The
      result is the single-device one on the global batch (B = b * D, in
      device order), invariant over the axis.

  Returns:
    Params-shaped gradients.

  Example:
    >>> loss_fn = lambda w, b: (b['x'] @ w - b['y']) ** 2
    >>> batch = {'x': jnp.ones((10, 3)), 'y': jnp.arange(10.)}
    >>> winsorized_mean_grad(loss_fn, jnp.ones(3), batch, c=2,
    ...                      microbatch_size=4).shape
    (3,)
  """
  params, local, size = _setup('winsorized_mean_grad', loss_fn, params, batch,
                               c, microbatch_size, axis_name)
  if axis_name is not None and _small(local, microbatch_size):
    return across_devices.winsorized_mean(
        factored_dense.factored_grads(loss_fn, params, batch), c, axis_name)
  if _small(size, microbatch_size):
    return _one_pass(lambda g: order_stats.winsorized_mean(g, c), loss_fn,
                     params, batch)
  zeros = jax.tree.map(jnp.zeros_like, params)
  if c == 0:
    total = _over_microbatches(
        loss_fn, params, batch, microbatch_size, zeros,
        lambda acc, g: jax.tree.map(
            lambda a, x: a + order_stats.sum_rows(x), acc, g,
            is_leaf=order_stats.is_lazy))
    return jax.tree.map(lambda s: s / size, _psum(total, axis_name))
  bounds = streamed_bounds(loss_fn, params, batch, c, microbatch_size,
                           axis_name)
  specs = order_stats.packed_shapes(_row_like(params))

  def fold(acc, grads):
    return [order_stats.clipped_sum_fold(a, x, lo, hi)
            for a, x, (lo, hi) in zip(acc, _inputs(grads), bounds)]

  total = _over_microbatches(loss_fn, params, batch, microbatch_size,
                             [jnp.zeros(s.shape, s.dtype) for s in specs],
                             fold)
  unpack = order_stats.unpacker(_row_like(params))
  return jax.tree.map(lambda s: s / size, unpack(_psum(total, axis_name)))


def trimmed_mean_grad(loss_fn, params: PyTree, batch: PyTree, *, c: int,
                      microbatch_size: int,
                      axis_name: mesh_axes.AxisName = None) -> PyTree:
  """Trimmed mean of the per-example gradients, in bounded memory.

  Equals `trimmed_mean(c)` over `per_example_grads(loss_fn, params, batch)`.

  References:
    S. Chatterjee, "Coherent Gradients: An Approach to Understanding
    Generalization in Gradient Descent-based Optimization", ICLR 2020,
    arXiv:2002.10657 (winsorized gradient descent, WGD).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    params: pytree of float arrays.
    batch: pytree of arrays with a shared leading example axis.
    c: values dropped at each end, per coordinate (2c + 1 <= B).
    microbatch_size: examples whose gradients are formed at once.
    axis_name: as in `winsorized_mean_grad` (a psum of the P clipped sums).

  Returns:
    Params-shaped gradients.

  Example:
    >>> g = trimmed_mean_grad(loss_fn, params, batch, c=2, microbatch_size=8)
    >>> g['layers'][0]['kernel'].shape
    (784, 32)
  """
  params, local, size = _setup('trimmed_mean_grad', loss_fn, params, batch,
                               c, microbatch_size, axis_name)
  if axis_name is not None and _small(local, microbatch_size):
    return across_devices.trimmed_mean(
        factored_dense.factored_grads(loss_fn, params, batch), c, axis_name)
  if _small(size, microbatch_size):
    return _one_pass(lambda g: order_stats.trimmed_mean(g, c), loss_fn,
                     params, batch)
  if c == 0:
    return winsorized_mean_grad(loss_fn, params, batch, c=0,
                                microbatch_size=microbatch_size,
                                axis_name=axis_name)
  bounds = streamed_bounds(loss_fn, params, batch, c, microbatch_size,
                           axis_name)
  # Clipped sums in >= float32 (a bf16 sum stops counting at 256).
  specs = order_stats.packed_shapes(_row_like(params))
  init = [jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32))
          for s in specs]

  def fold(acc, grads):
    return [order_stats.clipped_sum_fold(a, x, lo, hi)
            for a, x, (lo, hi) in zip(acc, _inputs(grads), bounds)]

  total = _psum(_over_microbatches(loss_fn, params, batch, microbatch_size,
                                   init, fold), axis_name)
  unpack = order_stats.unpacker(_row_like(params))
  return unpack([
      order_stats.trimmed_from_clipped(t, lo, hi, size, c).astype(s.dtype)
      for t, (lo, hi), s in zip(total, bounds, specs)])
