"""Noisy median: memorization of uniformly relabelled examples per aggregator.

Each aggregator of `config.aggregators` trains in `workdir/<aggregator>/`
(resumable) on the same noisy labels (drawn once, `workdir/corruption.npz`),
without momentum; tracked: accuracy on pristine training examples, on
corrupt ones w.r.t. their noisy labels (memorization), on the test set. The
workdir gets config.json, summary.json and the report.

Example:
  >>> from experiments.noisy_median.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/noisy_median')
  >>> summary['m3']['final_corrupt_accuracy']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections

from experiments.common import aggregator_specs
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import supervised
from experiments.noisy_median import report


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  supervised.check_fraction(config, 'noise.p', (config.noise.p,))
  aggregator_specs.check_config(
      config, "('mean', 'm3', 'rm3_reference', 'ra3_reference')")
  measure_lib.check(config, uses=('every_steps', 'eval_size',
                                  'test_eval_size', 'chunk_size'),
                    train_size=train_size)


def run_dir_name(spec: str) -> str:
  """'winsorized:4' -> 'winsorized_c4' (a directory name)."""
  return spec.replace(':', '_c')


def run_aggregator(s: supervised.Setup, workdir: str, spec: str,
                   train: supervised.Examples,
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains with one aggregator in workdir/<spec> (resuming); its summary."""
  run_dir = os.path.join(workdir, run_dir_name(spec))
  done = loop.finished_summary(run_dir)
  if done is not None:
    return done
  run = supervised.open_run(s, run_dir, train)

  def measure(state, step):
    row = {'epoch': step / run.per_epoch,
           **supervised.accuracy_row(*run.train_eval.at(state, step),
                                     run.corrupt)}
    row['test_accuracy'] = float(run.test_eval.at(state, step)[0].mean())
    return row

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run_dir, s, run.train, spec=spec, measure=measure,
      measure_steps=measure_lib.steps(s.config.measure, total),
      on_step=on_step, name=spec)
  return loop.write_summary(run_dir, report.summarize(rows))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every aggregator; {aggregator: summary}; writes the report."""
  s = supervised.setup(config, validate, workdir)
  train = supervised.load_noise(workdir, s, config.noise.kind, config.noise.p,
                                config.noise.seed)
  summary = {spec: run_aggregator(s, workdir, spec, train, on_step)
             for spec in config.aggregators}
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
