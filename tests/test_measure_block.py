"""experiments/common/measure.py: the one config.measure block of every experiment.

Pinned: every config module of every experiment builds its config.measure
with `measure.block` (exactly the fields of `measure.FIELDS`); `measure.check`
refuses, naming the field, a set field the experiment does not read, both
schedules at once and a growth <= 1; `measure.steps` gives the steps the
experiments measured at before the block (literal lists, the old
`measurement_steps` / `every_steps` of experiments/common/schedule.py).
"""

import importlib

import ml_collections
import pytest

from experiments.common import measure
from tests import helpers


# Every experiment, noisy_labels and grokking included (converted to the
# block together with the others; this test pins all of them).
@pytest.mark.parametrize('module', list(helpers.experiment_config_modules()))
def test_every_config_has_exactly_the_block(module):
  config = importlib.import_module(module).get_config()
  assert 'measure' in config, module
  assert set(config.measure) == set(measure.FIELDS), module
  # The schedule is one of the two forms, never both.
  every = config.measure.every_steps
  log = (config.measure.dense_until, config.measure.growth)
  assert (every is None) != (log == (None, None)), module
  for name, kind in measure.FIELDS.items():
    value = config.measure[name]
    assert value is None or isinstance(value, kind), (module, name, value)


def _config(**fields):
  return ml_collections.ConfigDict({'measure': measure.block(**fields)})


def test_block_sets_every_field():
  block = measure.block(every_steps=5, sample_size=10)
  assert set(block) == set(measure.FIELDS)
  assert block.every_steps == 5 and block.sample_size == 10
  assert block.method == 'auto' and block.dense_until is None
  block.dense_until = 3   # a placeholder field takes its type
  with pytest.raises(TypeError):
    block.eval_size = 'all'
  with pytest.raises(ValueError, match=r'measure.dense_steps: not a measure'):
    measure.block(dense_steps=3)


@pytest.mark.parametrize('fields,uses,match', [
    # A set field the experiment does not read, named.
    (dict(every_steps=5, eval_size=10), ('every_steps',),
     r'config.measure.eval_size: got 10; this experiment does not read it'),
    (dict(every_steps=5, sample_size=10), ('every_steps', 'eval_size'),
     r'config.measure.sample_size: got 10; this experiment does not read'),
    (dict(every_steps=5, test_eval_size=10), ('every_steps',),
     r'config.measure.test_eval_size: got 10'),
    # Both schedules at once, and neither.
    (dict(every_steps=5, dense_until=3, growth=1.5), ('every_steps',),
     r'config.measure.every_steps: got 5; pass every_steps=N, or '
     r'dense_until and growth .*not both'),
    (dict(every_steps=5, growth=1.5), ('dense_until',), r'not both'),
    (dict(), ('every_steps',), r'config.measure.every_steps: got None'),
    # growth <= 1, a bad dense_until or every_steps.
    (dict(dense_until=3, growth=1.0), ('dense_until',),
     r'config.measure.growth: got 1.0; pass a factor > 1'),
    (dict(dense_until=3, growth=0.5), ('dense_until',),
     r'config.measure.growth: got 0.5'),
    (dict(dense_until=3), ('dense_until',), r'config.measure.growth: got None'),
    (dict(dense_until=-1, growth=2.0), ('dense_until',),
     r'config.measure.dense_until: got -1'),
    (dict(every_steps=0), ('every_steps',),
     r'config.measure.every_steps: got 0'),
    # Sample sizes: within the training set; the optional ones >= 1.
    (dict(every_steps=5, sample_size=101), ('every_steps', 'sample_size'),
     r'config.measure.sample_size: got 101; pass 1..100'),
    (dict(every_steps=5), ('every_steps', 'sample_size'),
     r'config.measure.sample_size: got None'),
    (dict(every_steps=5, eval_size=101), ('every_steps', 'eval_size'),
     r'config.measure.eval_size: got 101; pass None .*or 1..100'),
    (dict(every_steps=5, test_eval_size=0), ('every_steps', 'test_eval_size'),
     r'config.measure.test_eval_size: got 0'),
    (dict(every_steps=5, method='magic'), ('every_steps',),
     r'config.measure.method: got .magic.'),
    (dict(every_steps=5, chunk_size=0), ('every_steps', 'chunk_size'),
     r'config.measure.chunk_size: got 0'),
])
def test_check_refuses_naming_the_field(fields, uses, match):
  with pytest.raises(ValueError, match=match):
    measure.check(_config(**fields), uses=uses, train_size=100)


def test_check_accepts_what_the_experiment_reads():
  measure.check(_config(every_steps=5), uses=('every_steps',))
  measure.check(_config(dense_until=0, growth=1.1, sample_size=100,
                        microbatch_size=25, eval_size=None,
                        test_eval_size=10_000, chunk_size=2048),
                uses=('dense_until', 'sample_size', 'microbatch_size',
                      'eval_size', 'test_eval_size', 'chunk_size'),
                train_size=100)
  with pytest.raises(ValueError, match=r'config.measure: got None'):
    measure.check(ml_collections.ConfigDict({'x': 1}), uses=())


@pytest.mark.parametrize('fields,total,want', [
    # The old every_steps(total, every).
    (dict(every_steps=4), 10, [0, 4, 8, 10]),
    (dict(every_steps=5), 10, [0, 5, 10]),
    (dict(every_steps=2), 6, [0, 2, 4, 6]),
    (dict(every_steps=100), 0, [0]),
    # The old measurement_steps(total, dense_until, growth).
    (dict(dense_until=4, growth=2.0), 100, [0, 1, 2, 3, 4, 8, 16, 32, 64, 100]),
    (dict(dense_until=3, growth=2.0), 8, [0, 1, 2, 3, 6, 8]),
    (dict(dense_until=8, growth=1.5), 24,
     [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 18, 24]),
    (dict(dense_until=0, growth=2.0), 6, [0, 2, 4, 6]),
    (dict(dense_until=2, growth=2.0), 6, [0, 1, 2, 4, 6]),
    (dict(dense_until=10, growth=2.0), 5, [0, 1, 2, 3, 4, 5]),
])
def test_steps_equal_the_old_schedules(fields, total, want):
  assert measure.steps(measure.block(**fields), total) == want
  assert measure.schedule(measure.block(**fields), total).steps() == want


def test_dense_then_log_spaced_at_tiny_size():
  # coherence_evolution/tiny and the default real_vs_random: every step of
  # the first epoch (40 steps), then 1.15x apart.
  steps = measure.steps(measure.block(dense_until=40, growth=1.15), 2400)
  assert steps[:44] == list(range(41)) + [46, 52, 60]
  assert steps[-1] == 2400 and len(steps) == 71
