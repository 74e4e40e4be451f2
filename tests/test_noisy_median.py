"""noisy_median end to end at micro size: the reference RM3 takes no step at
steps 0-1 (its rows repeat step 0's), SGD does; noise fractions; the report."""

import os

import numpy as np
import pytest

from experiments.common import data
from experiments.common import files
from experiments.noisy_median import report
from experiments.noisy_median import train
from experiments.noisy_median.configs import tiny
from experiments.noisy_median.configs import cifar10
from experiments.noisy_median.configs import default


def micro_config():
  config = tiny.get_config()
  config.model.widths = (784, 8, 10)
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.epochs = 1
  config.train.checkpoint_every_epochs = 1
  config.measure.every_steps = 1
  config.aggregators = ('rm3_reference',)
  config.mesh.data = 1
  return config


def test_micro_sweep(tmp_path):
  config = micro_config()
  summary = train.train_and_evaluate(config, str(tmp_path))
  keys = ('train_accuracy', 'pristine_accuracy', 'corrupt_accuracy',
          'test_accuracy')
  ref = files.read_rows(os.path.join(tmp_path, 'rm3_reference',
                                     'metrics.jsonl'))
  assert [r['step'] for r in ref] == list(range(9))
  for step in (1, 2):  # no update at steps 0 and 1: same params as step 0
    assert [ref[step][k] for k in keys] == [ref[0][k] for k in keys]
  # Step 2 updates with the median of 3 gradients (plain SGD would have
  # moved at step 0 already).
  assert [ref[3][k] for k in keys] != [ref[0][k] for k in keys]
  assert summary['rm3_reference'] == report.summarize(ref)
  meta = files.read_json(os.path.join(tmp_path, 'corruption.json'))
  assert meta['kind'] == 'uniform' and meta['p'] == 0.5
  # Uniform relabelling at p = 0.5 changes a label with probability 0.45.
  assert meta['corrupt_fraction'] == pytest.approx(0.45, abs=0.03)
  with np.load(os.path.join(tmp_path, 'corruption.npz')) as c:
    clean = data.load('mnist5k', 0)['train']['label']
    np.testing.assert_array_equal(c['corrupt'], c['label'] != clean)
  assert '| rm3_reference |' in open(os.path.join(tmp_path,
                                                  'report.md')).read()


def test_paper_configs_name_their_data_and_models():
  for module, name in ((default, 'imagenet2012'), (cifar10, 'cifar10')):
    config = module.get_config()
    assert (config.data.name, config.model.name) == (name, 'resnet18')
    assert config.train.momentum == 0.0
    assert config.aggregators == ('mean', 'm3', 'rm3_reference',
                                  'ra3_reference')
