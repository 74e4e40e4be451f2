"""Noisy-label sweep: memorization of corrupt examples per aggregator.

Each aggregator of `config.aggregators` trains in `workdir/<name>/`
(resumable; a finished run is not repeated) on the same noisy labels (drawn
once by `config.noise`, kept in workdir/corruption.npz). Tracked: accuracy
on pristine train examples, on corrupt train examples w.r.t. their noisy
labels (memorization), on the test set, and the m-coherence of fixed
pristine and corrupt samples (`measure.sample_size` each). The workdir gets
config.json, summary.json, noisy_labels.png and table.md. Data-parallel over
`config.mesh.data` devices; in a multi-process run only process 0 writes.

Where to change what: the data, the model, the noise and the optimizer are
config fields (`supervised.setup`, `supervised.load_noise`,
`aggregator_specs`); what is measured is `measure` below.

Example:
  >>> from experiments.noisy_labels.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/noisy_tiny')
  >>> summary['mean']['final_corrupt_accuracy']
"""

import os
from typing import Any, Callable, Dict, Optional

import jax
import ml_collections
import numpy as np

from coherence_jax import sharding
from experiments.common import aggregator_specs
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import plots
from experiments.common import supervised
from experiments.common import validation
from experiments.noisy_labels import report


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field (nothing is written)."""
  p = config.noise.p
  validation.check(isinstance(p, (int, float)) and 0 < p <= 1, 'noise.p', p,
                   'pass a probability in (0, 1] (p = 0 leaves no corrupt '
                   'examples to measure)')
  aggregator_specs.check_config(
      config, '--config.aggregators=\'("mean","winsorized:4")\'')
  measure_lib.check(config, uses=('every_steps', 'sample_size'),
                    train_size=train_size)


def run_dir_name(spec: str) -> str:
  """'winsorized:4' -> 'winsorized_c4' (a directory name)."""
  return spec.replace(':', '_c')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every aggregator of `config.aggregators`; returns {spec: summary}.

  Args:
    config: see configs/default.py.
    workdir: output directory; an existing one is resumed (same config only,
      unless config.allow_config_change).
    on_step: called before each training step of each run (for tests).

  Returns:
    {aggregator: report.summarize(...)}; also written to workdir/summary.json,
    with noisy_labels.png and table.md.
  """
  s = supervised.setup(config, validate, workdir)
  if s.streamed:
    raise ValueError(f'config.data.name: got {config.data.name!r}, which is '
                     'streamed; noisy_labels holds its data in memory: pass '
                     "an in-memory dataset (e.g. 'mnist').")
  train = supervised.load_noise(workdir, s, config.noise.kind, config.noise.p,
                                config.noise.seed)
  # Accuracies on this process's device; m-coherence on the first
  # measure.sample_size pristine and corrupt examples.
  device = jax.local_devices()[0]
  images, labels = jax.device_put((train.images, train.labels), device)
  test = jax.device_put(s.split_arrays('test'), device)
  groups = {'pristine': np.flatnonzero(~train.corrupt),
            'corrupt': np.flatnonzero(train.corrupt)}
  samples = {name: train.gather(idx[:config.measure.sample_size])
             for name, idx in groups.items()}
  per_epoch = supervised.steps_per_epoch(s)
  total = supervised.total_steps(s)

  def measure(state, step):
    params = supervised.params_of(state)
    row = {'epoch': step / per_epoch}
    for name, idx in groups.items():
      row[f'{name}_accuracy'] = float(s.net.accuracy(params, images[idx],
                                                     labels[idx]))
    row['test_accuracy'] = float(s.net.accuracy(params, *test))
    for name, sample in samples.items():
      row[f'{name}_m_coherence'] = float(sharding.sharded_coherence_stats(
          s.net.loss_fn, state['params'], sample, s.mesh,
          method=config.measure.method).m_coherence())
    return row

  summary, runs = {}, {}
  for spec in config.aggregators:
    run_dir = os.path.join(workdir, run_dir_name(spec))
    done = loop.finished_summary(run_dir)
    if done is None:
      rows = supervised.fit(
          run_dir, s, train, spec=spec, measure=measure,
          measure_steps=measure_lib.steps(config.measure, total),
          on_step=on_step, log=_logger(spec), name=spec)
      done = loop.write_summary(run_dir, report.summarize(rows))
    summary[spec] = done
    if distributed.is_writer():
      runs[spec] = files.read_rows(os.path.join(run_dir, 'metrics.jsonl'))
  if distributed.is_writer():
    _write_report(config, workdir, summary, runs)
  return summary


def _logger(spec: str) -> Callable[[Dict[str, Any]], None]:
  def log(row):
    print(f'[{spec}] step {row["step"]:5d} pristine '
          f'{row["pristine_accuracy"]:.3f} corrupt {row["corrupt_accuracy"]:.3f}'
          f' test {row["test_accuracy"]:.3f} m-coh pristine '
          f'{row["pristine_m_coherence"]:.1f} corrupt '
          f'{row["corrupt_m_coherence"]:.1f} ({row["seconds"]:.0f}s)',
          flush=True)
  return log


def _write_report(config: ml_collections.ConfigDict, workdir: str,
                  summary: Dict[str, Any], runs: Dict[str, Any]) -> None:
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  plots.plot_noisy_labels(
      runs, os.path.join(workdir, 'noisy_labels.png'),
      title=f'Noisy labels (p = {config.noise.p}): memorization under robust '
      'aggregation')
  table = report.format_table(summary)
  files.write_atomic(os.path.join(workdir, 'table.md'), table + '\n')
  print(table, flush=True)
