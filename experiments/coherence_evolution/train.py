"""Coherence evolution: one run per label-noise level, m-coherence measured densely early.

Each level trains in `workdir/noise_<p>/` (resumable; a finished run is not
repeated) on labels corrupted with probability p (`config.noise.kind`),
measuring on a FIXED training sample (with the run's labels) the m-coherence
of the whole network and of every module, and the train / pristine /
corrupt / test accuracies (of every example, or of the fixed samples of
config.measure.eval_size / test_eval_size: the ImageNet config streams its
data, see experiments/common/supervised.py). The workdir gets config.json,
summary.json and the report (report.md + PNGs).

Example:
  >>> from experiments.coherence_evolution.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/coh_evo')
  >>> summary['noise_0.00']['initial_m_coherence']
"""

from typing import Any, Callable, Dict, Optional

import ml_collections

from experiments.coherence_evolution import report
from experiments.common import measure as measure_lib
from experiments.common import supervised
from experiments.common import validation


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  supervised.check_fraction(config, 'noise.levels', config.noise.levels)
  measure_lib.check(config, uses=('dense_until', 'sample_size',
                                  'microbatch_size', 'eval_size',
                                  'test_eval_size', 'chunk_size'),
                    train_size=train_size)
  validation.check(config.measure.dense_until is not None,
                   'measure.dense_until', None, 'pass dense_until and growth, '
                   "not every_steps: the summary's 'early' is the dense part")


def run_level(s: supervised.Setup, run: supervised.Run, p: float,
              on_step: Optional[Callable[[int], None]] = None
              ) -> Dict[str, Any]:
  """Trains at noise level p in run.run_dir (resuming); its summary."""
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

  total = supervised.total_steps(s)
  rows = supervised.fit(
      run.run_dir, s, run.train, measure=measure,
      measure_steps=measure_lib.steps(config.measure, total),
      on_step=on_step, name=f'noise {p:.2f}')
  summary = report.summarize(rows, config.measure.dense_until)
  summary['corrupt_fraction'] = float(run.corrupt.mean())
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every noise level of config.noise.levels; {noise_<p>: summary}.

  Also writes workdir/summary.json and the report (report.md, PNGs).
  """
  return supervised.sweep_noise_levels(
      config, workdir, validate, run_level, report.write_report, on_step,
      sample_size=config.measure.sample_size)
