"""Aggregator names used by the experiments -> (gradient function, optimizer).

  mean                plain SGD on the batch-mean gradient
  winsorized:C        per-example gradients (Dense factored) -> winsorized_mean(C)
  trimmed:C           per-example gradients (Dense factored) -> trimmed_mean(C)
  median_of_means:K   K group gradients (per_group_grads) -> coordinate_median
  rm3 / ra3           batch gradients -> rolling_median(3) / rolling_mean(3)
  m3                  periodic_median(sgd, 3): one update per 3 batch gradients
"""

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from coherence_jax import aggregators
from coherence_jax import dense_per_example
from coherence_jax import per_example

GradientFn = Callable[..., object]
KNOWN = ('mean', 'winsorized:C', 'trimmed:C', 'median_of_means:K', 'rm3',
         'ra3', 'm3')


def _mean_grad(loss_fn):
  return lambda params, batch: jax.grad(
      lambda p: jnp.mean(loss_fn(p, batch)))(params)


def _int_arg(spec: str, arg: str, default=None) -> int:
  if not arg and default is not None:
    return default
  try:
    return int(arg)
  except ValueError:
    raise ValueError(f'aggregator: {spec!r} needs an integer after ":", e.g. '
                     f'"{spec.partition(":")[0]}:4".') from None


def build(spec: str, loss_fn, learning_rate: float
          ) -> Tuple[GradientFn, optax.GradientTransformation]:
  """Returns (gradient_fn(params, batch), optimizer) for an aggregator name.

  >>> grad_fn, opt = build('winsorized:4', loss_fn, 0.1)
  """
  name, _, arg = spec.partition(':')
  sgd = optax.sgd(learning_rate)
  if name == 'mean':
    return _mean_grad(loss_fn), sgd
  if name in ('winsorized', 'trimmed'):
    c = _int_arg(spec, arg)
    robust = (aggregators.winsorized_mean(c) if name == 'winsorized'
              else aggregators.trimmed_mean(c))
    # Dense kernels' per-example grads stay factored (a_i ⊗ δ_i) and are
    # formed inside the fused selection: no [B, d_in, d_out] tensor.
    grads = lambda params, batch: dense_per_example.factored_grads(
        loss_fn, params, batch)
    return grads, optax.chain(robust, sgd)
  if name == 'median_of_means':
    k = _int_arg(spec, arg, default=3)
    grads = lambda params, batch: per_example.group_grads_unjitted(
        loss_fn, params, batch, k)
    return grads, optax.chain(aggregators.coordinate_median(), sgd)
  if name == 'rm3':
    return _mean_grad(loss_fn), optax.chain(aggregators.rolling_median(3), sgd)
  if name == 'ra3':
    return _mean_grad(loss_fn), optax.chain(aggregators.rolling_mean(3), sgd)
  if name == 'm3':
    return _mean_grad(loss_fn), aggregators.periodic_median(sgd, 3)
  raise ValueError(f'aggregator: got {spec!r}; pass one of {KNOWN}.')
