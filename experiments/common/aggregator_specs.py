"""Aggregator names used in configs -> (gradient function, optimizer).

  mean                plain SGD on the batch-mean gradient
  winsorized:C        per-example gradients (Dense factored) -> winsorized_mean(C)
  trimmed:C           per-example gradients (Dense factored) -> trimmed_mean(C)
  median_of_means:K   K group gradients (per_group_grads) -> coordinate_median
                      (K defaults to 3)
  rm3 / ra3           batch gradients -> rolling_median(3) / rolling_mean(3)
  rm3_reference /     the same with skip_until_full=True: as the authors'
  ra3_reference       PyTorch RM3, no step until 3 gradients are buffered
  m3                  periodic_median(sgd, 3): one update per 3 batch gradients

Example:
  >>> parse('winsorized:4')
  ('winsorized', 4)
  >>> grad_fn, optimizer = build('winsorized:4', loss_fn, learning_rate=0.1)
"""

import re
from typing import Optional, Tuple

import optax

import coherence_jax as cj
from coherence_jax import aggregators

from experiments.common import train_step

KNOWN = ('mean', 'winsorized:C', 'trimmed:C', 'median_of_means:K', 'rm3',
         'ra3', 'rm3_reference', 'ra3_reference', 'm3')
_WITH_ARG = {'winsorized': None, 'trimmed': None, 'median_of_means': 3}
_NO_ARG = ('mean', 'rm3', 'ra3', 'rm3_reference', 'ra3_reference', 'm3')


def parse(spec: str, batch_size: Optional[int] = None
          ) -> Tuple[str, Optional[int]]:
  """(name, integer argument or None) of a spec; ValueError if it is bad.

  Args:
    spec: e.g. 'mean', 'winsorized:4', 'median_of_means:5'.
    batch_size: if given, also checks the argument fits the batch (2C+1 <= B
      for winsorized/trimmed, K divides B for median_of_means).

  Returns:
    The name and its integer argument (None for names without one).
  """
  if not isinstance(spec, str):
    raise ValueError(f'aggregator: got {spec!r}; pass a name such as '
                     f'"winsorized:4", one of {KNOWN}.')
  name, colon, arg = spec.partition(':')
  if name in _NO_ARG:
    if colon:
      raise ValueError(f'aggregator: {spec!r} takes no argument; pass '
                       f'"{name}".')
    return name, None
  if name not in _WITH_ARG:
    raise ValueError(f'aggregator: got {spec!r}; pass one of {KNOWN} (C, K '
                     'integers, e.g. "winsorized:4").')
  if not arg and _WITH_ARG[name] is not None:
    value = _WITH_ARG[name]
  else:
    if not re.fullmatch(r'-?[0-9]+', arg):  # int() also reads '4_0', ' 4'
      raise ValueError(f'aggregator: {spec!r} needs an integer after ":" '
                       f'in plain digits (no spaces or underscores), e.g. '
                       f'"{name}:4".')
    value = int(arg)
  _check_value(spec, name, value, batch_size)
  return name, value


def _check_value(spec: str, name: str, value: int,
                 batch_size: Optional[int]) -> None:
  if name == 'median_of_means':
    if value < 1:
      raise ValueError(f'aggregator: {spec!r}: K must be >= 1 groups.')
    if batch_size is not None and batch_size % value:
      raise ValueError(f'aggregator: {spec!r}: K={value} does not divide the '
                       f'batch size {batch_size}; pick a divisor.')
    return
  if value < 0:
    raise ValueError(f'aggregator: {spec!r}: C must be >= 0 (values clipped '
                     'or dropped at each end).')
  if batch_size is not None and 2 * value + 1 > batch_size:
    raise ValueError(f'aggregator: {spec!r}: C={value} needs 2C+1 <= batch '
                     f'size {batch_size}; use C <= {(batch_size - 1) // 2}.')


def build(spec: str, loss_fn, learning_rate: float,
          momentum: Optional[float] = None
          ) -> Tuple[train_step.GradFn, optax.GradientTransformation]:
  """(grad_fn(params, batch), optimizer) for an aggregator spec.

  Args:
    spec: an aggregator name (see the module docstring).
    loss_fn: `loss_fn(params, batch) -> [B]` per-example losses.
    learning_rate: the SGD learning rate.
    momentum: SGD momentum (None or 0: none, as the papers' M3 family).

  Returns:
    The gradient function whose output the optimizer's first transform takes,
    and the optimizer (aggregator first, then SGD).
  """
  name, arg = parse(spec)
  sgd = optax.sgd(learning_rate, momentum=momentum or None)
  mean_grad = train_step.mean_grad(loss_fn)
  if name == 'mean':
    return mean_grad, sgd
  if name in ('winsorized', 'trimmed'):
    robust = (aggregators.winsorized_mean(arg) if name == 'winsorized'
              else aggregators.trimmed_mean(arg))
    # Dense kernels' per-example grads stay factored (a_i ⊗ δ_i) and are
    # formed inside the fused selection: no [B, d_in, d_out] tensor.
    grads = lambda params, batch: aggregators.factored_grads(
        loss_fn, params, batch)
    return grads, optax.chain(robust, sgd)
  if name == 'median_of_means':
    grads = lambda params, batch: cj.per_group_grads(loss_fn, params, batch,
                                                     arg)
    return grads, optax.chain(aggregators.coordinate_median(), sgd)
  if name == 'rm3':
    return mean_grad, optax.chain(aggregators.rolling_median(3), sgd)
  if name == 'ra3':
    return mean_grad, optax.chain(aggregators.rolling_mean(3), sgd)
  if name in ('rm3_reference', 'ra3_reference'):
    rolling = (aggregators.rolling_median if name == 'rm3_reference'
               else aggregators.rolling_mean)
    return mean_grad, optax.chain(rolling(3, skip_until_full=True), sgd)
  return mean_grad, aggregators.periodic_median(sgd, 3)  # 'm3'


def check_config(config, example: str = "('mean', 'winsorized:4')") -> None:
  """config.aggregators: distinct specs, each fitting config.train.batch_size.

  Raises:
    ValueError: 'config.aggregators: ...' naming the bad spec.
  """
  specs = tuple(config.aggregators)
  if not specs or len(set(specs)) != len(specs):
    raise ValueError(f'config.aggregators: got {specs!r}; pass distinct '
                     f'aggregator names, e.g. {example}.')
  for spec in specs:
    try:
      parse(spec, config.train.batch_size)
    except ValueError as e:
      raise ValueError(f'config.aggregators: {e}') from None
