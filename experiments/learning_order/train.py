"""Learning order: per-example "when learnt" records, pristine vs corrupt.

Each noise level trains in `workdir/noise_<p>/` (resumable; a finished run
is not repeated). At every measurement step the whole training set is
classified once: that updates the per-example records
(`experiments/common/records.py`; checkpointed with the state, so a resumed
run continues them exactly; written to records.npz) and gives the train /
pristine / corrupt accuracies; the test accuracy too. The workdir gets
config.json, summary.json and the report.

Where to change what: the data, the model, the noise and the optimizer are
config fields (`supervised.setup`, `supervised.load_noise`); what a row
holds is `measure_fn` below, the records `records_fn`.

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
from experiments.common import loop
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


def measure_fn(run: supervised.Run) -> Callable[[Any, int], supervised.Row]:
  """`measure(state, step) -> row` of one run: train / pristine / corrupt
  accuracy (every training example) and test accuracy."""
  def measure(state, step):
    return {'epoch': step / run.per_epoch,
            **supervised.accuracy_row(*run.train_eval.at(state, step),
                                      run.corrupt),
            **supervised.test_row(run, state, step)}
  return measure


def records_fn(run: supervised.Run, kept: Dict[str, Any]
               ) -> Callable[[Any, Any, int], Any]:
  """`update_records(state, records, step) -> records` of one run: the
  records updated with the step's classification of every training
  example; the latest also kept in kept['records'] (on every process)."""
  def update_records(state, records, step):
    kept['records'] = records_lib.update(records,
                                         run.train_eval.at(state, step)[0],
                                         step)
    return kept['records']
  return update_records


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every noise level of config.noise.levels; {noise_<p>: summary}.

  Args:
    config: see configs/default.py.
    workdir: output directory; an existing one is resumed (same config only,
      unless config.allow_config_change).
    on_step: called before each training step of each run (for tests).

  Returns:
    {noise_<p>: report.summarize(...)}; also written to
    workdir/summary.json, with the report.
  """
  s = supervised.setup(config, validate, workdir)
  total = supervised.total_steps(s)
  summary = {}
  for p in config.noise.levels:
    run_dir = os.path.join(workdir, supervised.noise_dir(p))
    done = loop.finished_summary(run_dir)
    if done is None:
      train = supervised.load_noise(run_dir, s, config.noise.kind, p,
                                    config.noise.seed)
      run = supervised.open_run(s, run_dir, train)
      kept = {}  # the latest records, on every process
      rows = supervised.fit(
          run_dir, s, run.train, measure=measure_fn(run),
          measure_steps=measure_lib.steps(config.measure, total),
          records=records_lib.init(s.train_size),
          update_records=records_fn(run, kept),
          on_step=on_step, name=f'noise {p:.2f}')
      records = kept['records']  # as written to records.npz (process 0)
      if run.train.streamed and distributed.is_writer():
        # The mask the report reads (in memory, load_noise wrote it with the
        # labels): streamed, it comes with the evaluation of every example.
        files.write_npz(os.path.join(run_dir, 'corruption.npz'),
                        corrupt=run.corrupt)
      done = loop.write_summary(run_dir, report.summarize(
          rows, records['learnt_step'], run.corrupt,
          config.analysis.memorization_rise, records['first_correct_step']))
    summary[supervised.noise_dir(p)] = done
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
