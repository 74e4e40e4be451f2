"""Real vs random labels: train per label mode, measure m-coherence, report.

Each label mode trains in `workdir/<mode>/` (resumable; a finished run is not
repeated) and writes metrics.jsonl, train_labels.npy and summary.json; the
workdir gets config.json (first start), summary.json, real_vs_random.png and
table.md. Training is data-parallel over `config.mesh.data` devices (see
experiments/common/distributed.py); m-coherence is measured with
`sharded_coherence_stats` on the same mesh. In a multi-process run only
process 0 writes; every process computes the same metrics.

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
import optax

import coherence_jax as cj
from coherence_jax import data as cj_data
from coherence_jax import sharding
from experiments.common import data
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import model as model_lib
from experiments.common import plots
from experiments.common import run_config
from experiments.common import schedule
from experiments.common import train_step as train_step_lib
from experiments.common import validation
from experiments.real_vs_random import report

LABEL_MODES = ('real', 'random')
METHODS = ('auto', 'ghost', 'vmap')


def validate(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """ValueError naming the first bad field of `config` (nothing is written)."""
  train_size = dataset['train']['label'].shape[0]
  validation.check_common(config, train_size, data.input_size(dataset))
  modes = tuple(config.label_modes)
  validation.check(
      modes and set(modes) <= set(LABEL_MODES) and len(set(modes)) == len(modes),
      'label_modes', modes, f'pass distinct modes among {LABEL_MODES}')
  validation.check_sample_size(config, 'measure.sample_size', train_size)
  validation.positive_int(config, 'measure.microbatch_size')
  validation.positive_int(config, 'measure.dense_epochs', minimum=0)
  growth = config.measure.growth
  validation.check(isinstance(growth, (int, float)) and growth > 1,
                   'measure.growth', growth, 'pass a factor > 1, e.g. 1.15')
  validation.check(config.measure.method in METHODS, 'measure.method',
                   config.measure.method, f'pass one of {METHODS}')


def labels_for_mode(labels: np.ndarray, mode: str, seed: int) -> np.ndarray:
  """'real' keeps the labels; 'random' draws each uniformly from its seed."""
  if mode == 'real':
    return labels
  if mode == 'random':
    return cj_data.random_labels(labels, data.NUM_CLASSES, p=1.0,
                                 seed=seed)['label']
  raise ValueError(f'label mode: got {mode!r}; pass one of {LABEL_MODES}.')


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
      'modules': {name: entry['m_coherence']
                  for name, entry in numbers['modules'].items()},
  }


def run_label_mode(config: ml_collections.ConfigDict, workdir: str, mode: str,
                   dataset: data.Dataset, net: model_lib.Model,
                   trainer: train_step_lib.Trainer,
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains one label mode in `workdir/mode`, resuming; returns its summary.

  Args:
    config: a validated config.
    workdir: the experiment's workdir.
    mode: 'real' or 'random'.
    dataset: `data.load(...)` of config.data.
    net: `model_lib.make_mlp(...)` of config.model, and
    trainer: its SGD trainer; both shared by the modes, so that their
      jitted functions compile once.
    on_step: called before each step (tests simulate crashes with it).

  Returns:
    report.summarize of the run (read back if the run had finished).
  """
  run_dir = os.path.join(workdir, mode)
  summary_path = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary_path):
    return files.read_json(summary_path)
  writer = distributed.is_writer()
  os.makedirs(run_dir, exist_ok=True)
  train, test = dataset['train'], dataset['test']
  labels = labels_for_mode(train['label'], mode, seed=config.seed + 1)
  if writer:
    files.write_npy(os.path.join(run_dir, 'train_labels.npy'), labels)

  size, batch_size = train['image'].shape[0], config.train.batch_size
  steps_per_epoch = size // batch_size
  total = steps_per_epoch * config.train.epochs
  dense_until = steps_per_epoch * config.measure.dense_epochs

  host_images, host_labels = np.asarray(train['image']), np.asarray(labels)
  sample = {'image': host_images[:config.measure.sample_size],
            'label': host_labels[:config.measure.sample_size]}
  device = jax.local_devices()[0]  # accuracies: on this process's device
  images, train_labels, test_images, test_labels = jax.device_put(
      (host_images, host_labels, test['image'], test['label']), device)

  def train_step(state, step):
    idx = data.batch_indices(config.seed, step, batch_size, size)
    return trainer.step(state, {'image': host_images[idx],
                                'label': host_labels[idx]})

  def measure(state, step):
    stats = sharding.sharded_coherence_stats(
        net.loss_fn, state['params'], sample, trainer.mesh,
        microbatch_size=config.measure.microbatch_size,
        method=config.measure.method)
    params = distributed.local_copy(state['params'])
    row = measurement_row(step, steps_per_epoch, stats)
    row['train_accuracy'] = float(net.accuracy(params, images, train_labels))
    row['test_accuracy'] = float(net.accuracy(params, test_images, test_labels))
    return row

  def log(row):
    if row['step'] % steps_per_epoch == 0:
      print(f'[{mode}] epoch {row["epoch"]:5.1f} step {row["step"]:5d} '
            f'm-coherence {row["m_coherence"]:7.2f} '
            f'train {row["train_accuracy"]:.3f} test {row["test_accuracy"]:.3f} '
            f'({row["seconds"]:.0f}s)', flush=True)

  rows = loop.run(
      run_dir,
      state=trainer.init(net.params),
      total_steps=total, train_step=train_step, measure=measure,
      measure_steps=set(schedule.measurement_steps(
          total, dense_until, config.measure.growth)),
      checkpoint_every=steps_per_epoch * config.train.checkpoint_every_epochs,
      on_step=on_step, log=log, place=trainer.place, writer=writer)
  summary = report.summarize(rows, dense_until)
  if writer:
    files.write_json(summary_path, summary)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """Runs every label mode of `config` in `workdir`; returns {mode: summary}.

  Args:
    config: see configs/default.py.
    workdir: output directory; an existing one is resumed (same config only,
      unless config.allow_config_change).
    on_step: called before each training step of each mode (for tests).

  Returns:
    {mode: report.summarize(...)}; also written to workdir/summary.json,
    with the plot real_vs_random.png and table.md.
  """
  data.check_name(config.data.name)
  dataset = data.load(config.data.name, config.data.split_seed)
  validate(config, dataset)
  writer = distributed.is_writer()
  run_config.check_and_save(config, workdir, writer)
  net = model_lib.make_mlp(config.model.widths, config.seed)
  trainer = train_step_lib.make_trainer(
      train_step_lib.mean_grad(net.loss_fn),
      optax.sgd(config.train.learning_rate),
      distributed.make_mesh(config.mesh.data))
  summary, runs = {}, {}
  for mode in config.label_modes:
    summary[mode] = run_label_mode(config, workdir, mode, dataset, net,
                                   trainer, on_step)
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
