"""Coherence evolution: one run per label-noise level, m-coherence measured densely early.

Each level trains in `workdir/noise_<p>/` (resumable; a finished run is not
repeated) on labels corrupted with probability p (`config.noise.kind`),
measuring on a FIXED training sample (with the run's labels) the m-coherence
of the whole network and of every module, and the train / pristine /
corrupt / test accuracies. The workdir gets config.json, summary.json and
the report (report.md + PNGs).

Example:
  >>> from experiments.coherence_evolution.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/coh_evo')
  >>> summary['noise_0.00']['initial_m_coherence']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections

from experiments.coherence_evolution import report
from experiments.common import data
from experiments.common import distributed
from experiments.common import files
from experiments.common import schedule
from experiments.common import supervised
from experiments.common import validation


def validate(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """ValueError naming the first bad experiment field."""
  train_size = int(dataset['train']['label'].shape[0])
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  validation.check_sample_size(config, 'measure.sample_size', train_size)
  validation.positive_int(config, 'measure.microbatch_size')
  validation.positive_int(config, 'measure.dense_steps', minimum=0)
  growth = config.measure.growth
  validation.check(isinstance(growth, (int, float)) and growth > 1,
                   'measure.growth', growth, 'pass a factor > 1, e.g. 1.15')
  validation.check(config.measure.method in supervised.METHODS,
                   'measure.method', config.measure.method,
                   f'pass one of {supervised.METHODS}')


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
  images = s.dataset['train']['image']
  sample = supervised.sample_of(images, noisy['label'], supervised.fixed_sample(
      config.seed, s.train_size, config.measure.sample_size))
  train_eval = supervised.Evaluator(s.net, images, noisy['label'])
  test_eval = supervised.Evaluator(s.net, *supervised.test_split(s))
  per_epoch = supervised.steps_per_epoch(s)
  corrupt = noisy['corrupt']

  def measure(state, step):
    row = {'epoch': step / per_epoch,
           **supervised.coherence_row(s, state, sample,
                                      config.measure.microbatch_size,
                                      config.measure.method),
           **supervised.accuracy_row(*train_eval.at(state, step), corrupt)}
    correct, loss = test_eval.at(state, step)
    row['test_accuracy'], row['test_loss'] = float(correct.mean()), float(
        loss.mean())
    return row

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run_dir, s, noisy['label'], measure=measure,
      measure_steps=schedule.measurement_steps(
          total, config.measure.dense_steps, config.measure.growth),
      on_step=on_step, name=f'noise {p:.2f}')
  summary = report.summarize(rows, config.measure.dense_steps)
  summary['corrupt_fraction'] = float(corrupt.mean())
  if distributed.is_writer():
    files.write_json(os.path.join(run_dir, 'summary.json'), summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every noise level of config.noise.levels; {noise_<p>: summary}.

  Also writes workdir/summary.json and the report (report.md, PNGs).
  """
  return supervised.sweep_noise_levels(config, workdir, validate, run_level,
                                       report.write_report, on_step)
