"""easy_hard end to end at micro size: the split follows the split run's
records, halves are disjoint and of the stated sizes, the rows and report."""

import os

import numpy as np
import pytest

from experiments.common import files
from experiments.easy_hard import train
from experiments.easy_hard.configs import tiny


def test_halves_are_disjoint_and_equal_sized():
  learnt = np.zeros(100, bool)
  learnt[:70] = True
  h = train.halves(learnt, seed=0, equal_sizes=True)
  for kind in ('easy', 'hard', 'random'):
    assert len(h[f'{kind}_train']) == len(h[f'{kind}_test']) == 15
    assert not set(h[f'{kind}_train']) & set(h[f'{kind}_test'])
  assert learnt[h['easy_train']].all() and not learnt[h['hard_test']].any()
  unequal = train.halves(learnt, seed=0, equal_sizes=False)
  assert len(unequal['easy_train']) == 35 and len(unequal['hard_test']) == 15


@pytest.mark.slow  # ~5 s of CPU: four runs
def test_micro_run(tmp_path):
  config = tiny.get_config()
  config.model.widths = (784, 8, 10)
  config.train.batch_size = 100
  config.train.epochs = 1
  config.easy_hard.subset_epochs = 2
  config.measure.every_steps = 2
  config.mesh.data = 1
  summary = train.train_and_evaluate(config, str(tmp_path))
  sizes = summary['split']
  assert sizes['easy'] + sizes['hard'] == 4000
  with np.load(os.path.join(tmp_path, 'split', 'records.npz')) as r:
    assert int(np.sum(r['learnt_step'] >= 0)) == sizes['easy']
  split_rows = files.read_rows(os.path.join(tmp_path, 'split',
                                            'metrics.jsonl'))
  assert split_rows[-1]['train_accuracy'] == pytest.approx(
      sizes['easy'] / 4000, abs=1e-12)
  n = min(sizes['easy'], sizes['hard']) // 2
  assert sizes['easy_train'] == sizes['hard_test'] == n
  for kind in ('easy', 'hard', 'random'):
    rows = files.read_rows(os.path.join(tmp_path, f'train_{kind}',
                                        'metrics.jsonl'))
    assert rows[-1]['step'] == 2 * (n // 100)
    for key in ('train_subset_accuracy', 'easy_test_accuracy',
                'hard_test_accuracy', 'test_accuracy'):
      assert 0.0 <= rows[-1][key] <= 1.0
  assert '| train hard |' in open(os.path.join(tmp_path, 'report.md')).read()
