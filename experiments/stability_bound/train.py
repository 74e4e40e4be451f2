"""Stability bound: α̂ of a fixed sample along each run, and the train-test gaps.

Each noise level trains in `workdir/noise_<p>/` (resumable; a finished run
is not repeated) with constant learning rate; every `measure.every_steps`
steps it records the self-term-free α̂ and m-coherence of a FIXED training
sample (with the run's labels), the mean squared per-example gradient norm,
and train / test accuracy and loss, the test split also with labels noised
like the training labels (the theorem's gap is within one distribution).
The bound's factor is accumulated from these rows by `report.bound_factor`.
The workdir gets config.json, summary.json and the report.

Where to change what: the data, the model, the noise and the optimizer are
config fields (`supervised.setup`, `supervised.load_noise`); what a row
holds is `measure_fn` below.

Example:
  >>> from experiments.stability_bound.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/bound')
  >>> summary['noise_1.00']['final_factor'] > summary['noise_0.00']['final_factor']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections

from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import supervised
from experiments.common import validation
from experiments.stability_bound import report

NOISY_TEST_SEED = 1000  # test labels noised with noise.seed + this


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  measure_lib.check(config, uses=('every_steps', 'sample_size',
                                  'microbatch_size', 'eval_size',
                                  'test_eval_size', 'chunk_size'),
                    train_size=train_size)
  validation.check(config.measure.sample_size >= 2, 'measure.sample_size',
                   config.measure.sample_size, 'pass >= 2 (α̂ averages over '
                   'pairs of examples)')


def measure_fn(s: supervised.Setup, run: supervised.Run, p: float
               ) -> Callable[[Any, int], supervised.Row]:
  """`measure(state, step) -> row` of the run at noise level p: α̂,
  m-coherence and mean squared gradient norm of the fixed sample, train /
  pristine / corrupt / test accuracy and loss, and the test accuracy and
  loss with test labels noised like the training labels."""
  config = s.config
  sample = supervised.coherence_sample(s, run.train,
                                       config.measure.sample_size)
  # The theorem's gap is between train and test examples of ONE
  # distribution: with noisy training labels, test labels noised alike.
  noisy_test = supervised.relabel(s, config.noise.kind, p,
                                  config.noise.seed + NOISY_TEST_SEED, 'test')
  noisy_test_eval = supervised.evaluator(s, noisy_test,
                                         run.test_eval.indices)

  def measure(state, step):
    coherence = supervised.coherence_row(s, state, sample,
                                         config.measure.microbatch_size,
                                         config.measure.method)
    row = {k: coherence[k] for k in ('alpha_unbiased', 'm_coherence',
                                     'mean_sq_norm')}
    row.update(supervised.accuracy_row(*run.train_eval.at(state, step),
                                       run.corrupt))
    row.update(supervised.test_row(run, state, step))
    correct, loss = noisy_test_eval.at(state, step)
    row['noisy_test_accuracy'] = float(correct.mean())
    row['noisy_test_loss'] = float(loss.mean())
    return row
  return measure


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
      run = supervised.open_run(s, run_dir, train, config.measure.sample_size)
      rows = supervised.fit(
          run_dir, s, run.train, measure=measure_fn(s, run, p),
          measure_steps=measure_lib.steps(config.measure, total),
          on_step=on_step, name=f'noise {p:.2f}')
      done = loop.write_summary(
          run_dir, report.summarize(rows, config.train.learning_rate))
    summary[supervised.noise_dir(p)] = done
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
