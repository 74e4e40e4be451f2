"""Coherence evolution: one run per label-noise level, m-coherence measured densely early.

Each level trains in `workdir/noise_<p>/` (resumable; a finished run is not
repeated) on labels corrupted with probability p (`config.noise.kind`),
measuring on a FIXED training sample (with the run's labels) the m-coherence
of the whole network and of every module, and the train / pristine /
corrupt / test accuracies (of every example, or of the fixed samples of
config.measure.eval_size / test_eval_size: the ImageNet config streams its
data, see experiments/common/supervised.py). The workdir gets config.json,
summary.json and the report (report.md + PNGs).

Where to change what: the data, the model, the noise and the optimizer are
config fields (`supervised.setup`, `supervised.load_noise`); what a row
holds is `measure_fn` below.

Example:
  >>> from experiments.coherence_evolution.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/coh_evo')
  >>> summary['noise_0.00']['initial_m_coherence']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections

from experiments.coherence_evolution import report
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import supervised


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  measure_lib.check(config, uses=('dense_until', 'sample_size',
                                  'microbatch_size', 'eval_size',
                                  'test_eval_size', 'chunk_size'),
                    train_size=train_size, dense_part=True)


def measure_fn(s: supervised.Setup, run: supervised.Run
               ) -> Callable[[Any, int], supervised.Row]:
  """`measure(state, step) -> row` of one run: the m-coherence of the fixed
  sample (whole network and per module), train / pristine / corrupt / test
  accuracy."""
  config = s.config
  sample = supervised.coherence_sample(s, run.train,
                                       config.measure.sample_size)

  def measure(state, step):
    return {'epoch': step / run.per_epoch,
            **supervised.coherence_row(s, state, sample,
                                       config.measure.microbatch_size,
                                       config.measure.method),
            **supervised.accuracy_row(*run.train_eval.at(state, step),
                                      run.corrupt),
            **supervised.test_row(run, state, step)}
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
    {noise_<p>: report.summarize(...) with 'corrupt_fraction'}; also written
    to workdir/summary.json, with the report (report.md, PNGs).
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
          run_dir, s, run.train, measure=measure_fn(s, run),
          measure_steps=measure_lib.steps(config.measure, total),
          on_step=on_step, name=f'noise {p:.2f}')
      done = report.summarize(rows, config.measure.dense_until)
      done['corrupt_fraction'] = float(run.corrupt.mean())
      done = loop.write_summary(run_dir, done)
    summary[supervised.noise_dir(p)] = done
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
