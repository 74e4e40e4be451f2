"""coherence_jax.schedules reproduces the experiments' old measurement schedules.

The old spellings are copied here verbatim (experiments/common/schedule.py's
`measurement_steps` before it delegated to `Schedule`, and the experiments'
`range(0, total, every)` / `set(range(0, total, every)) | {total}`), and
compared on every config under experiments/*/configs/, at that config's run
length and at edge lengths, both as lists and step by step through
`should_measure`.
"""

import importlib

import pytest

from coherence_jax import schedules
from experiments.common import measure
from tests import helpers

# Training-set sizes (train split) of the configs' datasets: only the run
# length of each config depends on them.
TRAIN_SIZES = {'mnist5k': 4_000, 'mnist': 60_000, 'fashion_mnist': 60_000,
               'cifar10': 50_000, 'cifar100': 50_000,
               'imagenet2012': 1_281_167}
EDGE_TOTALS = (0, 1, 2, 3, 7, 40, 41, 100, 1_001)


def old_measurement_steps(total_steps, dense_until, growth):
  steps = list(range(0, min(dense_until, total_steps) + 1))
  step = float(max(steps[-1], 1))
  while True:
    step = max(step * growth, step + 1)
    if int(step) >= total_steps:
      break
    steps.append(int(step))
  if steps[-1] != total_steps:
    steps.append(total_steps)
  return steps


def old_every(total, every):
  # range(0, total, every) plus the last step (supervised.fit adds it;
  # noisy_labels spells it `set(range(0, total, every)) | {total}`).
  return sorted(set(range(0, total, every)) | {total})


def _nominal_total(config, experiment):
  train = config.train
  if 'steps' in train:
    return int(train.steps)
  size = TRAIN_SIZES.get(config.data.name, 50_000)
  if experiment == 'easy_hard':
    size //= 2   # each half of the split trains on its own
  return (size // train.batch_size) * train.epochs


def _schedules(config, total):
  """(old steps, new Schedule) of each schedule the experiment runs."""
  measure = config.measure   # experiments/common/measure.py's block
  out = []
  if measure.get('dense_until') is not None:
    out.append((old_measurement_steps(total, measure.dense_until,
                                      measure.growth),
                schedules.Schedule(dense_until=measure.dense_until,
                                   growth=measure.growth,
                                   total_steps=total)))
  every = measure.get('every_steps')
  if every is not None:
    out.append((old_every(total, every),
                schedules.Schedule(every=every, total_steps=total)))
  return out


@pytest.mark.parametrize('module', list(helpers.experiment_config_modules()))
def test_schedule_equals_old_on_config(module):
  config = importlib.import_module(module).get_config()
  experiment = module.split('.')[1]
  nominal = _nominal_total(config, experiment)
  found = 0
  for total in (nominal,) + EDGE_TOTALS:
    for old, new in _schedules(config, total):
      found += 1
      assert new.steps() == old, (module, total)
      if total <= 20_000:   # step by step (the long runs as lists only)
        assert [s for s in range(total + 2) if new.should_measure(s)] == old
  assert found, f'{module}: no measurement schedule found in the config'


def test_the_experiments_measure_block_delegates():
  assert measure.steps(measure.block(dense_until=40, growth=1.15), 2400) == (
      old_measurement_steps(2400, 40, 1.15))
  assert measure.steps(measure.block(every_steps=4), 10) == [0, 4, 8, 10]


def test_open_ended_schedule():
  log = schedules.Schedule(dense_until=5, growth=1.3)
  want = old_measurement_steps(10_000, 5, 1.3)[:-1]
  assert [s for s in range(10_000) if log(s)] == want
  assert schedules.should_measure(0, every=7)
  assert not schedules.should_measure(8, every=7)


@pytest.mark.parametrize('kwargs,match', [
    ({}, 'pass every=N'),
    ({'every': 3, 'growth': 2.0}, 'not both'),
    ({'every': 0}, 'every: got 0'),
    ({'dense_until': 3}, 'growth: got None'),
    ({'dense_until': -1, 'growth': 2.0}, 'dense_until: got -1'),
    ({'dense_until': 3, 'growth': 1.0}, 'growth: got 1.0'),
    ({'every': 2, 'total_steps': -1}, 'total_steps: got -1'),
])
def test_bad_schedule_is_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.Schedule(**kwargs)
