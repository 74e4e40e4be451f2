"""stability_bound end to end at micro size: α̂ rows, the factor against numpy,
its closed form, and the report's statement of the constants."""

import math
import os

import numpy as np
import pytest

from experiments.common import files
from experiments.stability_bound import report
from experiments.stability_bound import train
from experiments.stability_bound.configs import tiny


def micro_config():
  config = tiny.get_config()
  config.noise.levels = (0.0, 1.0)
  config.model.widths = (784, 8, 10)
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.epochs = 1
  config.train.checkpoint_every_epochs = 1
  config.measure.every_steps = 2
  config.measure.sample_size = 16
  config.measure.microbatch_size = 16
  config.mesh.data = 1
  return config


def test_factor_closed_form():
  rows = [{'step': s, 'alpha_unbiased': 0.5} for s in (0, 10, 30)]
  # 30 steps of 0.1 * sqrt(2 * (1 - 0.5)) = 3.0.
  assert report.bound_factor(rows, 0.1) == pytest.approx([0, 1.0, 3.0],
                                                         rel=1e-12)


@pytest.mark.slow  # ~5 s of CPU: two runs with coherence measurements
def test_micro_run_factor_and_report(tmp_path):
  config = micro_config()
  summary = train.train_and_evaluate(config, str(tmp_path))
  for name in ('noise_0.00', 'noise_1.00'):
    rows = files.read_rows(os.path.join(tmp_path, name, 'metrics.jsonl'))
    assert [r['step'] for r in rows] == [0, 2, 4, 6, 8]
    alpha = np.array([r['alpha_unbiased'] for r in rows])
    assert np.all((alpha >= -1 / 15 - 1e-6) & (alpha <= 1 + 1e-6))
    want = np.sum(0.1 * 2 * np.sqrt(2 * (1 - alpha[:-1])))
    assert summary[name]['final_factor'] == pytest.approx(want, rel=1e-12)
    assert summary[name]['final_loss_gap'] == pytest.approx(
        rows[-1]['noisy_test_loss'] - rows[-1]['train_loss'], rel=1e-12)
    if name == 'noise_0.00':  # no noise: the noisy test split is the test split
      assert rows[-1]['noisy_test_loss'] == rows[-1]['test_loss']
    # With α̂ in [0, 1], the factor is at most η T sqrt(2).
    assert summary[name]['final_factor'] <= 0.1 * 8 * math.sqrt(2) * 1.05
  text = open(os.path.join(tmp_path, 'report.md')).read()
  assert 'Only the α-dependent factor' in text and 'm = 4000' in text
  assert os.path.getsize(os.path.join(tmp_path, 'bound_vs_gap.png')) > 10_000
