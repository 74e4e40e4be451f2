"""A --config.<field> that the config lacks is one line listing the valid
fields, at flag parsing."""

import os
import subprocess
import sys

import ml_collections
import pytest

from experiments.common import entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unknown_field_names_the_valid_ones():
  config = ml_collections.ConfigDict({'train': {'lr': 0.1, 'epochs': 2},
                                      'seed': 0})
  assert entry.unknown_field(config, ['--config.train.lr=1']) is None
  assert entry.unknown_field(config, ['--config.train.foo=1']) == (
      "--config.train.foo: the config has no field 'foo' in 'train'; valid: "
      'epochs, lr.')
  assert "valid: seed, train" in entry.unknown_field(config,
                                                     ['--config.model.x=1'])
  assert 'not a group' in entry.unknown_field(config, ['--config.seed.x=1'])


@pytest.mark.parametrize('config_flag', [
    ['--config=experiments/real_vs_random/configs/tiny.py'],
    []])  # the default config is read when the flag is defined
def test_main_refuses_an_unknown_field_in_one_line(tmp_path, config_flag):
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.real_vs_random.main',
       f'--workdir={tmp_path}', *config_flag, '--config.train.foo=1'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == (
      "error: --config.train.foo: the config has no field 'foo' in 'train'; "
      'valid: batch_size, checkpoint_every_epochs, epochs, learning_rate.')
  assert 'Traceback' not in out.stderr
