"""python -m experiments.report: dispatch by config.json, reports written from
rows (synthetic workdirs, numbers known in closed form), clear errors."""

import os

import pytest

from experiments import report
from experiments.common import files


def _workdir(root, config, runs, extra=None):
  os.makedirs(root, exist_ok=True)
  files.write_json(os.path.join(root, 'config.json'), config)
  for name, rows in runs.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for row in rows:
      files.append_row(os.path.join(root, name, 'metrics.jsonl'), row)
  for name, obj in (extra or {}).items():
    files.write_json(os.path.join(root, name), obj)
  return root


BASE = {'data': {'name': 'mnist5k'}, 'model': {'name': 'mlp',
                                                'widths': [784, 8, 10]},
        'train': {'learning_rate': 0.1, 'batch_size': 100, 'epochs': 1}}


def test_noisy_median_and_stability_bound_reports(tmp_path):
  rows = [{'step': s, 'train_accuracy': 0.5, 'pristine_accuracy': 0.9,
           'corrupt_accuracy': c, 'test_accuracy': t, 'seconds': 1.0}
          for s, c, t in ((0, 0.1, 0.1), (30, 0.05, 0.8), (60, 0.4, 0.7))]
  median = _workdir(
      str(tmp_path / 'median'),
      {**BASE, 'experiment': 'noisy_median', 'aggregators': ['m3'],
       'noise': {'kind': 'uniform', 'p': 0.5, 'seed': 1}},
      {'m3': rows}, {'corruption.json': {'kind': 'uniform', 'p': 0.5,
                                         'corrupt_fraction': 0.45}})
  bound_rows = [{'step': s, 'alpha_unbiased': 0.5, 'm_coherence': 2.0,
                 'mean_sq_norm': 1.0, 'train_accuracy': 1.0,
                 'train_loss': 0.1, 'test_accuracy': 0.9, 'test_loss': 0.4,
                 'seconds': 1.0} for s in (0, 10, 30)]
  bound = _workdir(
      str(tmp_path / 'bound'),
      {**BASE, 'experiment': 'stability_bound',
       'noise': {'kind': 'uniform', 'levels': [0.0], 'seed': 1},
       'measure': {'sample_size': 16, 'every_steps': 10}},
      {'noise_0.00': bound_rows})
  paths = report.write([median, bound], out=str(tmp_path / 'out'))
  assert paths == [str(tmp_path / 'out' / n / 'report.md')
                   for n in ('median', 'bound')]
  text = open(paths[0]).read()
  # Peak test 0.8 at step 30; corrupt accuracy of the last rows at or before
  # steps 20 / 40 / 60 (steps 0, 30, 60).
  assert '| m3 | 0.700 | 0.800 (30) | 0.100 / 0.050 / 0.400 | 0.900 |' in text
  text = open(paths[1]).read()
  # 30 steps of 0.1 * sqrt(2 * (1 - 0.5)) = 3.0, sqrt(2) * 3 - 3 = 1.243;
  # loss gap 0.3.
  assert ('| 0 % noise | 3.000 | 1.243 | 5.00e-01 | 2.000 | 0.300 / 0.300 | '
          '0.100 |') in text
  for name in ('median/accuracy.png', 'bound/bound_vs_gap.png'):
    assert os.path.getsize(tmp_path / 'out' / name) > 10_000


def test_dispatch_and_errors(tmp_path):
  assert report.experiment_of({'label_modes': ['real']}) == 'real_vs_random'
  assert report.experiment_of({'aggregators': ['mean'],
                               'noise': {'p': 0.5}}) == 'noisy_labels'
  assert report.experiment_of({'experiment': 'easy_hard'}) == 'easy_hard'
  with pytest.raises(ValueError, match="experiment 'nope' is not one of"):
    report.experiment_of({'experiment': 'nope'})
  with pytest.raises(ValueError, match='has no config.json'):
    report.write([str(tmp_path)])
  with pytest.raises(ValueError, match='at least one'):
    report.write([])


def test_noisy_labels_workdirs_get_a_table_across_noise_levels(tmp_path):
  workdirs = []
  for p, corrupt in ((0.25, 0.2), (0.75, 0.6)):
    rows = [{'step': s, 'epoch': s / 40, 'pristine_accuracy': 0.9,
             'corrupt_accuracy': c, 'test_accuracy': t, 'seconds': 2.0,
             'pristine_m_coherence': 2.0, 'corrupt_m_coherence': 1.0}
            for s, c, t in ((0, 0.1, 0.1), (40, corrupt, 0.85))]
    workdirs.append(_workdir(
        str(tmp_path / f'p{p}'),
        {**BASE, 'aggregators': ['mean'], 'noise': {'p': p, 'seed': 1}},
        {'mean': rows}, {'corruption.json': {'p': p, 'seed': 1,
                                             'corrupt_fraction': 0.9 * p}}))
  paths = report.write(workdirs, out=str(tmp_path / 'out'))
  assert paths[-1] == str(tmp_path / 'out' / 'README.md')
  text = open(paths[-1]).read()
  assert '| mean | 0.200 / 0.850 / 0.850 | 0.600 / 0.850 / 0.850 |' in text
  assert '[p = 0.25](p0.25/report.md)' in text


@pytest.mark.parametrize('steps', [(0, 30, 30, 60), (0, 60, 30)])
def test_a_damaged_metrics_file_is_refused(tmp_path, steps):
  """Rows repeated or out of order (two runs on one workdir) are not
  reported from."""
  rows = [{'step': s, 'train_accuracy': 0.5, 'pristine_accuracy': 0.9,
           'corrupt_accuracy': 0.1, 'test_accuracy': 0.5, 'seconds': 1.0}
          for s in steps]
  median = _workdir(
      str(tmp_path / 'median'),
      {**BASE, 'experiment': 'noisy_median', 'aggregators': ['m3'],
       'noise': {'kind': 'uniform', 'p': 0.5, 'seed': 1}},
      {'m3': rows}, {'corruption.json': {'kind': 'uniform', 'p': 0.5,
                                         'corrupt_fraction': 0.45}})
  with pytest.raises(ValueError, match='m3/metrics.jsonl: damaged metrics: '
                     r'steps not strictly increasing at \[30\]'):
    report.write([median])
