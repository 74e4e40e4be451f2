"""Real vs random labels: train per label mode, measure m-coherence, report.

Each label mode trains in `workdir/<mode>/` (resumable; a finished run is not
repeated) and writes metrics.jsonl, the labels it trained on
(train_labels.npy; streamed data: labels.json, the per-index rule) and
summary.json; the workdir gets config.json (first start), summary.json,
real_vs_random.png and table.md. The network is chosen by
`config.model.name` (default 'mlp' with config.model.widths; e.g. 'resnet50',
experiments/common/nets.py) and the data by `config.data.name`: mnist5k and
the in-memory tfds datasets are held as arrays, imagenet2012 is streamed
(each process reads its slice of every batch and measurement chunk, see
experiments/common/examples.py). Training is data-parallel over
`config.mesh.data` devices (experiments/common/distributed.py); m-coherence
of the FIXED sample of the first `measure.sample_size` training examples is
measured on the same mesh (streamed: in chunks, statistics merged), whole
network and per module. In a multi-process run only process 0 writes; every
process computes the same metrics.

Example:
  >>> from experiments.real_vs_random.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/rvr_tiny')
  >>> summary['real']['test_accuracy'] > summary['random']['test_accuracy']
  True
"""

import os
from typing import Any, Callable, Dict, Optional

import jax
import ml_collections
import numpy as np

import coherence_jax as cj
from coherence_jax import data as cj_data
from coherence_jax import sharding
from experiments.common import data
from experiments.common import distributed
from experiments.common import examples as examples_lib
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import plots
from experiments.common import supervised
from experiments.common import validation
from experiments.real_vs_random import report

LABEL_MODES = ('real', 'random')


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field (nothing is written)."""
  modes = tuple(config.label_modes)
  validation.check(
      modes and set(modes) <= set(LABEL_MODES) and len(set(modes)) == len(modes),
      'label_modes', modes, f'pass distinct modes among {LABEL_MODES}')
  measure_lib.check(config, uses=('dense_until', 'sample_size',
                                  'microbatch_size', 'eval_size',
                                  'test_eval_size', 'chunk_size'),
                    train_size=train_size, dense_part=True)


def labels_for_mode(labels: np.ndarray, mode: str, seed: int,
                    num_classes: int = data.NUM_CLASSES) -> np.ndarray:
  """'real' keeps the labels; 'random' draws each uniformly from its seed."""
  if mode == 'real':
    return labels
  if mode == 'random':
    return cj_data.random_labels(labels, num_classes, p=1.0,
                                 seed=seed)['label']
  raise ValueError(f'label mode: got {mode!r}; pass one of {LABEL_MODES}.')


def examples_for_mode(s: supervised.Setup, mode: str,
                      seed: int) -> supervised.Examples:
  """The training examples of a label mode ('random': 100 % uniform labels;
  in memory drawn for the whole set, streamed per index)."""
  if mode not in LABEL_MODES:
    raise ValueError(f'label mode: got {mode!r}; pass one of {LABEL_MODES}.')
  if s.streamed:
    return supervised.relabel(s, 'uniform', 1.0 if mode == 'random' else 0.0,
                              seed)
  images, labels = s.split_arrays('train')
  return examples_lib.InMemory(
      images, labels_for_mode(labels, mode, seed, s.num_classes))


def measurement_row(step: int, steps_per_epoch: int,
                    stats: cj.CoherenceStats) -> Dict[str, Any]:
  """The coherence numbers of one measurement (whole network, per module)."""
  numbers = stats.report()
  return {
      'epoch': step / steps_per_epoch,
      'm_coherence': numbers['m_coherence'],
      'alpha': numbers['alpha'],
      'alpha_unbiased': numbers['alpha_unbiased'],
      'gradient_diversity': numbers['gradient_diversity'],
      'noise_scale': numbers['noise_scale'],
      'modules': {name: entry['m_coherence']
                  for name, entry in numbers['modules'].items()},
  }


def _accuracies(s: supervised.Setup, train: supervised.Examples
                ) -> Callable[[Any, int], Dict[str, float]]:
  """`accuracies(state, step) -> {'train_accuracy', 'test_accuracy'}` of
  every example, or of the samples of measure.eval_size / test_eval_size
  (in memory: one jitted float32 mean on this process's device; streamed:
  `examples.Evaluator`, each process scoring its slice of each chunk)."""
  train_idx = supervised.eval_indices(s, 'train')
  test_idx = supervised.eval_indices(s, 'test')
  if train.streamed:
    train_eval = supervised.evaluator(s, train, train_idx)
    test_eval = supervised.evaluator(s, supervised.clean(s, 'test'), test_idx)
    return lambda state, step: {
        'train_accuracy': float(train_eval.at(state, step)[0].mean()),
        'test_accuracy': float(test_eval.at(state, step)[0].mean())}
  test_images, test_labels = s.split_arrays('test')
  host = {'train': (np.asarray(train.images), train.labels),
          'test': (test_images, test_labels)}
  for split, idx in (('train', train_idx), ('test', test_idx)):
    if idx is not None:
      host[split] = tuple(np.asarray(x)[idx] for x in host[split])
  device = jax.local_devices()[0]  # accuracies: on this process's device
  on_device = jax.device_put(host, device)

  def accuracies(state, step):
    del step
    params = distributed.local_copy(state['params'])
    return {f'{split}_accuracy': float(s.net.accuracy(params,
                                                      *on_device[split]))
            for split in ('train', 'test')}
  return accuracies


def run_label_mode(s: supervised.Setup, workdir: str, mode: str,
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains one label mode in `workdir/mode`, resuming; returns its summary.

  Args:
    s: the experiment's `supervised.Setup` (data, net, mesh; the modes
      share it, so that their jitted functions compile once).
    workdir: the experiment's workdir.
    mode: 'real' or 'random'.
    on_step: called before each step (tests simulate crashes with it).

  Returns:
    report.summarize of the run (read back if the run had finished).
  """
  config = s.config
  run_dir = os.path.join(workdir, mode)
  summary_path = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary_path):
    return files.read_json(summary_path)
  writer = distributed.is_writer()
  os.makedirs(run_dir, exist_ok=True)
  train = examples_for_mode(s, mode, seed=config.seed + 1)
  if writer and train.streamed:
    c = train.source.corruption
    files.write_json(os.path.join(run_dir, 'labels.json'), {
        'mode': mode, 'rule': c.kind, 'p': c.p, 'seed': c.seed})
  elif writer:
    files.write_npy(os.path.join(run_dir, 'train_labels.npy'), train.labels)

  steps_per_epoch = supervised.steps_per_epoch(s)
  total = supervised.total_steps(s)
  # The FIXED sample: the first m training examples (tfds writes its splits
  # shuffled; mnist5k's split is shuffled).
  first = np.arange(config.measure.sample_size)
  sample = (examples_lib.Sample(train, first) if train.streamed
            else train.gather(first))
  accuracies = _accuracies(s, train)

  def measure(state, step):
    if train.streamed:
      stats = examples_lib.coherence_stats(
          s.net.loss_fn, state['params'], sample, s.mesh,
          microbatch_size=config.measure.microbatch_size,
          method=config.measure.method,
          chunk_size=config.measure.get('chunk_size', None)
          or examples_lib.CHUNK)
    else:
      stats = sharding.sharded_coherence_stats(
          s.net.loss_fn, state['params'], sample, s.mesh,
          microbatch_size=config.measure.microbatch_size,
          method=config.measure.method)
    return {**measurement_row(step, steps_per_epoch, stats),
            **accuracies(state, step)}

  def log(row):
    if row['step'] % steps_per_epoch == 0:
      print(f'[{mode}] epoch {row["epoch"]:5.1f} step {row["step"]:5d} '
            f'm-coherence {row["m_coherence"]:7.2f} '
            f'train {row["train_accuracy"]:.3f} test {row["test_accuracy"]:.3f} '
            f'({row["seconds"]:.0f}s)', flush=True)

  rows = supervised.fit(
      run_dir, s, train, spec='mean', measure=measure,
      measure_steps=measure_lib.steps(config.measure, total),
      on_step=on_step, log=log, name=mode)
  summary = {**report.summarize(rows, config.measure.dense_until),
             **loop.completeness(run_dir)}
  if writer:
    files.write_json(summary_path, summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every label mode of `config` in `workdir`; returns {mode: summary}.

  Args:
    config: see configs/default.py (configs/resnet50_imagenet.py: the
      full-size run).
    workdir: output directory; an existing one is resumed (same config only,
      unless config.allow_config_change).
    on_step: called before each training step of each mode (for tests).

  Returns:
    {mode: report.summarize(...)}; also written to workdir/summary.json,
    with the plot real_vs_random.png and table.md.
  """
  s = supervised.setup(config, validate, workdir)
  writer = distributed.is_writer()
  summary, runs = {}, {}
  for mode in config.label_modes:
    summary[mode] = run_label_mode(s, workdir, mode, on_step)
    if not writer:
      continue
    runs[mode] = files.read_rows(os.path.join(workdir, mode, 'metrics.jsonl'))
  if not writer:
    return summary
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  plots.plot_real_vs_random(runs, os.path.join(workdir, 'real_vs_random.png'))
  table = report.format_table(summary)
  files.write_atomic(os.path.join(workdir, 'table.md'), table + '\n')
  print(table, flush=True)
  return summary
