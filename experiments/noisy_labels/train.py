"""Noisy-label sweep: memorization of corrupt examples per aggregator.

Each aggregator trains in `workdir/<name>/` (resumable; a finished run is not
repeated). Tracked: accuracy on pristine train examples, on corrupt train
examples w.r.t. their noisy labels (memorization), on the test set, and the
m-coherence of fixed pristine and corrupt samples. The workdir gets
config.json, corruption.npz / corruption.json (the masks, drawn once),
summary.json, noisy_labels.png and table.md. Training is data-parallel over
`config.mesh.data` devices, the aggregator over the global batch (see
experiments/common/train_step.py); m-coherence is measured with
`sharded_coherence_stats`. In a multi-process run only process 0 writes.

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

from coherence_jax import data as cj_data
from coherence_jax import sharding
from experiments.common import aggregator_specs
from experiments.common import distributed
from experiments.common import data
from experiments.common import files
from experiments.common import loop
from experiments.common import model as model_lib
from experiments.common import plots
from experiments.common import run_config
from experiments.common import schedule
from experiments.common import train_step as train_step_lib
from experiments.common import validation
from experiments.noisy_labels import report


def validate(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """ValueError naming the first bad field of `config` (nothing is written)."""
  train_size = dataset['train']['label'].shape[0]
  validation.check_common(config, train_size, data.input_size(dataset))
  p = config.noise.p
  validation.check(isinstance(p, (int, float)) and 0 < p <= 1, 'noise.p', p,
                   'pass a probability in (0, 1] (p = 0 leaves no corrupt '
                   'examples to measure)')
  validation.positive_int(config, 'noise.seed', minimum=0)
  aggregator_specs.check_config(
      config, '--config.aggregators=\'("mean","winsorized:4")\'')
  validation.positive_int(config, 'measure.every_steps')
  validation.check_sample_size(config, 'measure.coherence_sample_size',
                               train_size)


def run_dir_name(spec: str) -> str:
  """'winsorized:4' -> 'winsorized_c4' (a directory name)."""
  return spec.replace(':', '_c')


def corruption(config: ml_collections.ConfigDict, train_labels: np.ndarray,
               workdir: str) -> Dict[str, np.ndarray]:
  """Noisy labels and masks, drawn once and saved in the workdir.

  Args:
    config: the run's config (noise.p, noise.seed).
    train_labels: the clean training labels.
    workdir: where corruption.npz / corruption.json live.

  Returns:
    {'label', 'selected', 'corrupt'} of `cj_data.corrupt_labels`.
  """
  npz, meta = (os.path.join(workdir, 'corruption.npz'),
               os.path.join(workdir, 'corruption.json'))
  if os.path.exists(npz):
    saved = files.read_json(meta)
    if (saved['p'], saved['seed']) != (config.noise.p, config.noise.seed):
      raise ValueError(
          f'config.noise: got p={config.noise.p}, seed={config.noise.seed}; '
          f'{workdir} holds labels corrupted with p={saved["p"]}, '
          f'seed={saved["seed"]}: pass a new --workdir.')
    with np.load(npz) as arrays:
      return dict(arrays)
  out = cj_data.corrupt_labels(train_labels, config.noise.p, config.noise.seed)
  if not distributed.is_writer():  # deterministic: every process draws it
    return out
  files.write_json(meta, {
      'p': config.noise.p, 'seed': config.noise.seed,
      'selected_fraction': float(out['selected'].mean()),
      'corrupt_fraction': float(out['corrupt'].mean())})
  files.write_npz(npz, **out)
  return out


def run_aggregator(config: ml_collections.ConfigDict, workdir: str, spec: str,
                   dataset: data.Dataset, noisy: Dict[str, np.ndarray],
                   net: model_lib.Model, mesh: jax.sharding.Mesh,
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains with one aggregator in `workdir/<spec>`, resuming; its summary.

  Args:
    config: a validated config.
    workdir: the experiment's workdir.
    spec: the aggregator, e.g. 'winsorized:4'.
    dataset: `data.load(...)` of config.data.
    noisy: `corruption(...)`.
    net: `model_lib.make_mlp(...)` of config.model, shared by the runs so
      that the measurements compile once.
    mesh: the ('data',) mesh of `distributed.make_mesh(config.mesh.data)`.
    on_step: called before each step (tests simulate crashes with it).

  Returns:
    report.summarize of the run (read back if the run had finished).
  """
  run_dir = os.path.join(workdir, run_dir_name(spec))
  summary_path = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary_path):
    return files.read_json(summary_path)
  train, test = dataset['train'], dataset['test']
  writer = distributed.is_writer()
  trainer = train_step_lib.make_trainer(*aggregator_specs.build(
      spec, net.loss_fn, config.train.learning_rate), mesh=mesh)
  # The batch-mean run measures its training batches too (one backward pass).
  size, batch_size = train['image'].shape[0], config.train.batch_size
  steps_per_epoch = size // batch_size
  total = steps_per_epoch * config.train.epochs

  host_images, host_labels = np.asarray(train['image']), np.asarray(noisy['label'])
  corrupt = np.asarray(noisy['corrupt'])
  pristine_idx, corrupt_idx = np.flatnonzero(~corrupt), np.flatnonzero(corrupt)
  n_sample = config.measure.coherence_sample_size
  samples = {name: {'image': host_images[idx[:n_sample]],
                    'label': host_labels[idx[:n_sample]]}
             for name, idx in (('pristine', pristine_idx), ('corrupt', corrupt_idx))}
  device = jax.local_devices()[0]  # accuracies: on this process's device
  images, labels, test_images, test_labels = jax.device_put(
      (host_images, host_labels, test['image'], test['label']), device)

  def read(step):
    idx = data.batch_indices(config.seed, step, batch_size, size)
    return {'image': host_images[idx], 'label': host_labels[idx]}, False

  def train_step(state, step):
    return trainer.step(state, read(step)[0])

  def measure(state, step):
    params = distributed.local_copy(state['params'])
    row = {'epoch': step / steps_per_epoch,
           'learning_rate': float(config.train.learning_rate),
           'pristine_accuracy': float(net.accuracy(
               params, images[pristine_idx], labels[pristine_idx])),
           'corrupt_accuracy': float(net.accuracy(
               params, images[corrupt_idx], labels[corrupt_idx])),
           'test_accuracy': float(net.accuracy(params, test_images,
                                               test_labels))}
    for name, sample in samples.items():
      row[f'{name}_m_coherence'] = float(sharding.sharded_coherence_stats(
          net.loss_fn, state['params'], sample, mesh).m_coherence())
    return row

  def log(row):
    print(f'[{spec}] step {row["step"]:5d} pristine {row["pristine_accuracy"]:.3f}'
          f' corrupt {row["corrupt_accuracy"]:.3f} test {row["test_accuracy"]:.3f}'
          f' m-coh pristine {row["pristine_m_coherence"]:.1f} corrupt '
          f'{row["corrupt_m_coherence"]:.1f} ({row["seconds"]:.0f}s)', flush=True)

  every = config.measure.every_steps
  rows = loop.run(
      run_dir,
      state=trainer.init(net.params),
      total_steps=total, train_step=train_step, measure=measure,
      measure_steps=set(schedule.every_steps(total, every)),
      checkpoint_every=steps_per_epoch * config.train.checkpoint_every_epochs,
      on_step=on_step, log=log, place=trainer.place, writer=writer,
      metadata=run_config.metadata(config),
      measured_train_step=train_step_lib.loop_measured_step(trainer, read))
  summary = {**report.summarize(rows), **loop.completeness(run_dir)}
  if writer:
    files.write_json(summary_path, summary)
  return summary


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
  data.check_name(config.data.name)
  dataset = data.load(config.data.name, config.data.split_seed,
                      data_dir=config.data.get('data_dir', None))
  validate(config, dataset)
  writer = distributed.is_writer()
  run_config.check_and_save(config, workdir, writer)
  noisy = corruption(config, dataset['train']['label'], workdir)
  net = model_lib.make_mlp(config.model.widths, config.seed)
  mesh = distributed.make_mesh(config.mesh.data)
  summary, runs = {}, {}
  for spec in config.aggregators:
    summary[spec] = run_aggregator(config, workdir, spec, dataset, noisy, net,
                                   mesh, on_step)
    if not writer:
      continue
    runs[spec] = files.read_rows(os.path.join(workdir, run_dir_name(spec),
                                              'metrics.jsonl'))
  if not writer:
    return summary
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  plots.plot_noisy_labels(
      runs, os.path.join(workdir, 'noisy_labels.png'),
      title=f'Noisy labels (p = {config.noise.p}): memorization under robust '
      'aggregation')
  table = report.format_table(summary)
  files.write_atomic(os.path.join(workdir, 'table.md'), table + '\n')
  print(table, flush=True)
  return summary
