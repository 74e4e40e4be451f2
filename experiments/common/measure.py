"""The one `config.measure` block of every experiment, and its schedule.

Every experiment's `config.measure` is `block(...)`: the same fields, spelled
the same way. An experiment reads the ones it uses (`check(..., uses=...)`)
and refuses any other that is set.

  When (one `coherence_jax.schedules.Schedule`; steps, the last always):
    every_steps           at steps 0, N, 2N, ...; or
    dense_until, growth   every step 0..dense_until, then steps `growth`
                          apart (log-spaced).
  On what:
    sample_size           the FIXED training sample whose m-coherence is
                          measured (noisy_labels: each of its pristine and
                          corrupt samples; grokking: training pairs).
    held_out_sample_size  a FIXED held-out sample measured the same way.
    eval_size             training examples whose accuracy is tracked
                          (None: every one).
    test_eval_size        test examples whose accuracy is tracked (None:
                          every one).
  How:
    microbatch_size       examples per per-example-gradient chunk (None: all).
    method                'auto' (ghost norms where possible), 'ghost', 'vmap'.
    chunk_size            examples per streamed evaluation chunk (None: 2048).

Example:
  >>> measure = block(sample_size=1000, dense_until=40, growth=1.15)
  >>> schedule(measure, total_steps=2400).steps()[39:44]
  [39, 40, 46, 52, 60]
"""

from typing import Any, Dict, List, Optional, Sequence

import ml_collections

from coherence_jax import _checks
from coherence_jax import coherence
from coherence_jax import schedules
from experiments.common import validation

METHODS = coherence.METHODS   # the library's: 'ghost', 'auto', 'vmap'
# Every field of the block and its type (None: not set).
FIELDS: Dict[str, type] = {
    'every_steps': int, 'dense_until': int, 'growth': float,
    'sample_size': int, 'held_out_sample_size': int,
    'eval_size': int, 'test_eval_size': int,
    'microbatch_size': int, 'method': str, 'chunk_size': int,
}
SCHEDULE = ('every_steps', 'dense_until', 'growth')


def block(**fields: Any) -> ml_collections.ConfigDict:
  """config.measure with `fields` set and every other field None.

  Unset fields are typed placeholders, so `--config.measure.<field>=...`
  works on any of them. `method` defaults to 'auto'.

  Raises:
    ValueError: a field that is not one of `FIELDS`.

  Example:
    >>> block(every_steps=100).every_steps
    100
  """
  unknown = sorted(set(fields) - set(FIELDS))
  if unknown:
    raise ValueError(f'measure.{unknown[0]}: not a measure field; the fields '
                     f'are {tuple(FIELDS)}.')
  fields = {'method': 'auto', **fields}
  return ml_collections.ConfigDict({
      name: fields[name] if fields.get(name) is not None
      else ml_collections.config_dict.placeholder(kind)
      for name, kind in FIELDS.items()})


def schedule(measure: ml_collections.ConfigDict,
             total_steps: Optional[int] = None) -> schedules.Schedule:
  """The `Schedule` of config.measure (every_steps, or dense_until + growth).

  Example:
    >>> schedule(block(every_steps=4), total_steps=10).steps()
    [0, 4, 8, 10]
  """
  if measure.get('every_steps') is not None:
    return schedules.Schedule(every=measure.every_steps,
                              total_steps=total_steps)
  return schedules.Schedule(dense_until=measure.get('dense_until'),
                            growth=measure.get('growth'),
                            total_steps=total_steps)


def steps(measure: ml_collections.ConfigDict, total_steps: int) -> List[int]:
  """Every step config.measure measures at in a run of `total_steps`."""
  return schedule(measure, total_steps).steps()


def _sample(config, field: str, upper: Optional[int], what: str,
            optional: bool) -> None:
  value = config.measure.get(field)
  if optional and value is None:
    return
  validation.check(_checks.is_int(value) and value >= 1
                   and (upper is None or value <= upper), f'measure.{field}',
                   value, ('pass None (every example) or ' if optional
                           else 'pass ') + f'1..{upper or "N"} ({what})')


def check(config: ml_collections.ConfigDict, *, uses: Sequence[str],
          train_size: Optional[int] = None,
          held_out_size: Optional[int] = None,
          dense_part: bool = False) -> None:
  """ValueError naming the first bad field of config.measure.

  Args:
    config: the experiment config.
    uses: the fields the experiment reads ('every_steps' or any other of
      `SCHEDULE` stands for the whole schedule). Any other field that is
      set is refused.
    train_size, held_out_size: upper bounds of the sample sizes.
    dense_part: the experiment's summary reads the dense part of a
      log-spaced schedule ('early'), so dense_until must be set.
  """
  measure = config.get('measure')
  validation.check(measure is not None and set(FIELDS) <= set(measure),
                   'measure', None if measure is None else sorted(measure),
                   'build it with experiments.common.measure.block(...)')
  if any(f in uses for f in SCHEDULE):
    uses = tuple(uses) + SCHEDULE
  unused = [f for f in FIELDS if f not in uses and f != 'method'
            and measure.get(f) is not None]
  validation.check(not unused, f'measure.{unused[0] if unused else ""}',
                   measure.get(unused[0]) if unused else None,
                   'this experiment does not read it: leave it None (it '
                   f'reads {tuple(uses)})')
  if any(f in uses for f in SCHEDULE):
    every, dense, growth = (measure.get(f) for f in SCHEDULE)
    validation.check((every is None) != (dense is None and growth is None),
                     'measure.every_steps', every,
                     'pass every_steps=N, or dense_until and growth '
                     '(log-spaced), not both')
    validation.check(not dense_part or dense is not None,
                     'measure.dense_until', dense, 'pass dense_until and '
                     "growth, not every_steps: the summary's 'early' is the "
                     'dense part')
    if every is not None:
      validation.positive_int(config, 'measure.every_steps')
    else:
      validation.positive_int(config, 'measure.dense_until', minimum=0)
      validation.check(isinstance(growth, (int, float))
                       and not isinstance(growth, bool) and growth > 1,
                       'measure.growth', growth,
                       'pass a factor > 1, e.g. 1.15')
  sizes = {'sample_size': (train_size, 'the training set', False),
           'held_out_sample_size': (held_out_size, 'the held-out set', False),
           'eval_size': (train_size, 'the training set', True),
           'test_eval_size': (None, 'the test set', True)}
  for field, (upper, what, optional) in sizes.items():
    if field in uses:
      _sample(config, field, upper, what, optional)
  if 'microbatch_size' in uses and measure.get('microbatch_size') is not None:
    validation.positive_int(config, 'measure.microbatch_size')
  validation.check(measure.get('method') in METHODS, 'measure.method',
                   measure.get('method'), f'pass one of {METHODS}')
  if measure.get('chunk_size') is not None:
    validation.positive_int(config, 'measure.chunk_size')
