"""Learning order: per-example "when learnt" records, pristine vs corrupt.

Each noise level trains in `workdir/noise_<p>/` (resumable). At every
measurement step the whole training set is classified once: that updates the
per-example records (`experiments/common/records.py`; checkpointed with the
state, so a resumed run continues them exactly; written to records.npz) and
gives the train / pristine / corrupt accuracies; the test accuracy too.
The workdir gets config.json, summary.json and the report.

Example:
  >>> from experiments.learning_order.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/learning_order')
  >>> summary['noise_0.50']['best_test_step']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections
import numpy as np

from experiments.common import data
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import records as records_lib
from experiments.common import supervised
from experiments.common import validation
from experiments.learning_order import report


def validate(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """ValueError naming the first bad experiment field."""
  del dataset
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  validation.positive_int(config, 'measure.every_steps')
  rise = config.analysis.memorization_rise
  validation.check(isinstance(rise, (int, float)) and 0 < rise < 1,
                   'analysis.memorization_rise', rise,
                   'pass a fraction in (0, 1), e.g. 0.05')


def run_level(s: supervised.Setup, workdir: str, p: float,
              on_step: Optional[Callable[[int], None]] = None
              ) -> Dict[str, Any]:
  """Trains at noise level p in workdir/noise_<p> (resuming); its summary."""
  config = s.config
  run_dir = os.path.join(workdir, supervised.noise_dir(p))
  done = supervised.finished_summary(run_dir)
  if done is not None:
    return done
  noisy = supervised.load_noise(run_dir, s, config.noise.kind, p,
                                config.noise.seed)
  train_eval = supervised.Evaluator(s.net, s.dataset['train']['image'],
                                    noisy['label'])
  test_eval = supervised.Evaluator(s.net, *supervised.test_split(s))
  corrupt = noisy['corrupt']
  per_epoch = supervised.steps_per_epoch(s)

  def update_records(state, records, step):
    return records_lib.update(records, train_eval.at(state, step)[0], step)

  def measure(state, step):
    row = {'epoch': step / per_epoch,
           **supervised.accuracy_row(*train_eval.at(state, step), corrupt)}
    correct, loss = test_eval.at(state, step)
    row['test_accuracy'], row['test_loss'] = float(correct.mean()), float(
        loss.mean())
    return row

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run_dir, s, noisy['label'], measure=measure,
      measure_steps=range(0, total, config.measure.every_steps),
      records=records_lib.init(s.train_size), update_records=update_records,
      on_step=on_step, name=f'noise {p:.2f}')
  if not distributed.is_writer():  # records.npz is process 0's
    return report.summarize(rows, None, corrupt,
                            config.analysis.memorization_rise)
  with np.load(os.path.join(run_dir, loop.RECORDS)) as saved:
    learnt, first = saved['learnt_step'], saved['first_correct_step']
  summary = report.summarize(rows, learnt, corrupt,
                             config.analysis.memorization_rise, first)
  files.write_json(os.path.join(run_dir, 'summary.json'), summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every noise level; {noise_<p>: summary}; writes the report."""
  return supervised.sweep_noise_levels(config, workdir, validate, run_level,
                                       report.write_report, on_step)
