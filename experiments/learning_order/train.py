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

from experiments.common import distributed
from experiments.common import files
from experiments.common import measure as measure_lib
from experiments.common import records as records_lib
from experiments.common import supervised
from experiments.common import validation
from experiments.learning_order import report


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  rise = config.analysis.memorization_rise
  validation.check(isinstance(rise, (int, float)) and 0 < rise < 1,
                   'analysis.memorization_rise', rise,
                   'pass a fraction in (0, 1), e.g. 0.05')
  # No eval_size: the records need every training example.
  measure_lib.check(config, uses=('every_steps', 'test_eval_size',
                                  'chunk_size'), train_size=train_size)


def run_level(s: supervised.Setup, run: supervised.Run, p: float,
              on_step: Optional[Callable[[int], None]] = None
              ) -> Dict[str, Any]:
  """Trains at noise level p in run.run_dir (resuming); its summary."""
  config = s.config
  kept = {}  # the latest records, on every process

  def update_records(state, records, step):
    kept['records'] = records_lib.update(records,
                                         run.train_eval.at(state, step)[0],
                                         step)
    return kept['records']

  def measure(state, step):
    return {'epoch': step / run.per_epoch,
            **supervised.accuracy_row(*run.train_eval.at(state, step),
                                      run.corrupt),
            **supervised.test_row(run, state, step)}

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run.run_dir, s, run.train, measure=measure,
      measure_steps=measure_lib.steps(config.measure, total),
      records=records_lib.init(s.train_size), update_records=update_records,
      on_step=on_step, name=f'noise {p:.2f}')
  records = kept['records']  # as written to records.npz (process 0)
  if run.train.streamed and distributed.is_writer():
    # The mask the report reads (in memory, load_noise wrote it with the
    # labels): streamed, it comes with the evaluation of every example.
    files.write_npz(os.path.join(run.run_dir, 'corruption.npz'),
                    corrupt=run.corrupt)
  return report.summarize(rows, records['learnt_step'], run.corrupt,
                          config.analysis.memorization_rise,
                          records['first_correct_step'])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every noise level; {noise_<p>: summary}; writes the report."""
  return supervised.sweep_noise_levels(config, workdir, validate, run_level,
                                       report.write_report, on_step)
