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
from experiments.common import data
from experiments.common import distributed
from experiments.common import files
from experiments.common import supervised
from experiments.common import validation
from experiments.noisy_median import report


def validate(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """ValueError naming the first bad experiment field."""
  del dataset
  supervised.check_fraction(config, 'noise.p', (config.noise.p,))
  specs = tuple(config.aggregators)
  validation.check(len(specs) >= 1 and len(set(specs)) == len(specs),
                   'aggregators', specs, 'pass distinct aggregator names, '
                   "e.g. ('mean', 'm3', 'rm3_reference', 'ra3_reference')")
  for spec in specs:
    try:
      aggregator_specs.parse(spec, config.train.batch_size)
    except ValueError as e:
      raise ValueError(f'config.aggregators: {e}') from None
  validation.positive_int(config, 'measure.every_steps')


def run_dir_name(spec: str) -> str:
  """'winsorized:4' -> 'winsorized_c4' (a directory name)."""
  return spec.replace(':', '_c')


def run_aggregator(s: supervised.Setup, workdir: str, spec: str,
                   noisy: Dict[str, Any],
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains with one aggregator in workdir/<spec> (resuming); its summary."""
  run_dir = os.path.join(workdir, run_dir_name(spec))
  done = supervised.finished_summary(run_dir)
  if done is not None:
    return done
  train_eval = supervised.Evaluator(s.net, s.dataset['train']['image'],
                                    noisy['label'])
  test_eval = supervised.Evaluator(s.net, *supervised.test_split(s))
  per_epoch = supervised.steps_per_epoch(s)

  def measure(state, step):
    row = {'epoch': step / per_epoch,
           **supervised.accuracy_row(*train_eval.at(state, step),
                                     noisy['corrupt'])}
    row['test_accuracy'] = float(test_eval.at(state, step)[0].mean())
    return row

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run_dir, s, noisy['label'], spec=spec, measure=measure,
      measure_steps=range(0, total, s.config.measure.every_steps),
      on_step=on_step, name=spec)
  summary = report.summarize(rows)
  if distributed.is_writer():
    files.write_json(os.path.join(run_dir, 'summary.json'), summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every aggregator; {aggregator: summary}; writes the report."""
  s = supervised.setup(config, validate, workdir)
  noisy = supervised.load_noise(workdir, s, config.noise.kind, config.noise.p,
                                config.noise.seed)
  summary = {spec: run_aggregator(s, workdir, spec, noisy, on_step)
             for spec in config.aggregators}
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
