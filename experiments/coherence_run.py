"""One training run that measures coherence on a fixed sample, resumable.

Logic for experiments/real_vs_random.py; tests call `run_label_mode` directly.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

import coherence_jax as cj
from coherence_jax import data as cj_data
from experiments import jsonl
from experiments import schedule
from experiments import training_loop

LABEL_MODES = ('real', 'random')
NUM_CLASSES = 10


def load_data(config: ml_collections.ConfigDict) -> Dict[str, Dict[str, np.ndarray]]:
  if config.data.name != 'mnist5k':
    raise ValueError(f'config.data.name: got {config.data.name!r}; this '
                     'experiment runs offline on "mnist5k".')
  return cj_data.load_mnist5k(seed=config.data.split_seed)


def labels_for_mode(labels: np.ndarray, mode: str, seed: int) -> np.ndarray:
  """'real' keeps the labels; 'random' draws each uniformly from its seed."""
  if mode == 'real':
    return labels
  if mode == 'random':
    return cj_data.random_labels(labels, NUM_CLASSES, p=1.0, seed=seed)['label']
  raise ValueError(f'label mode: got {mode!r}; pass one of {LABEL_MODES}.')


def accuracy_fn(loss_fn: cj.nnx_bridge.NNXLossFn):
  @jax.jit
  def accuracy(params, images, labels):
    logits = loss_fn.model(params)(images)
    return jnp.mean(jnp.argmax(logits, -1) == labels)
  return accuracy


def train_step_fn(loss_fn, optimizer: optax.GradientTransformation):
  @jax.jit
  def train_step(params, opt_state, batch):
    grads = jax.grad(lambda p: jnp.mean(loss_fn(p, batch)))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return train_step


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The example order of one epoch; a pure function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(size)


def batch_indices(seed: int, step: int, batch_size: int,
                  size: int) -> np.ndarray:
  """Indices of step `step`'s batch: epochs reshuffle, the remainder is dropped."""
  steps_per_epoch = size // batch_size
  order = epoch_order(seed, step // steps_per_epoch, size)
  return order[(step % steps_per_epoch) * batch_size:][:batch_size]


def measurement_row(step: int, steps_per_epoch: int,
                    stats: cj.CoherenceStats) -> Dict[str, Any]:
  report = stats.report()
  return {
      'epoch': step / steps_per_epoch,
      'm_coherence': report['m_coherence'],
      'alpha': report['alpha'],
      'alpha_unbiased': report['alpha_unbiased'],
      'gradient_diversity': report['gradient_diversity'],
      'modules': {name: entry['m_coherence']
                  for name, entry in report['modules'].items()},
  }


def summarize(rows: List[Dict[str, Any]], dense_until: int) -> Dict[str, Any]:
  """The numbers the demo reports for one run."""
  early = [r['m_coherence'] for r in rows if r['step'] <= dense_until]
  late = [r for r in rows if r['step'] > dense_until] or rows[-1:]
  peak = max(rows, key=lambda r: r['m_coherence'])
  late_peak = max(late, key=lambda r: r['m_coherence'])
  final = rows[-1]
  return {
      'early_m_coherence': float(np.mean(early)),
      'peak_m_coherence': peak['m_coherence'],
      'peak_step': peak['step'],
      'late_peak_m_coherence': late_peak['m_coherence'],
      'late_peak_epoch': late_peak['epoch'],
      'final_m_coherence': final['m_coherence'],
      'train_accuracy': final['train_accuracy'],
      'test_accuracy': final['test_accuracy'],
      'steps': final['step'],
  }


def run_label_mode(config: ml_collections.ConfigDict, workdir: str, mode: str,
                   dataset: Optional[Dict[str, Any]] = None,
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  """Trains one run in `workdir/mode`, resuming from its latest checkpoint.

  Writes metrics.jsonl (one row per measurement) and, when finished,
  summary.json; a finished run is not repeated. `on_step(step)` is called before
  each step (tests use it to simulate a crash).
  """
  run_dir = os.path.join(workdir, mode)
  summary_path = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary_path):
    return jsonl.read_json(summary_path)
  os.makedirs(run_dir, exist_ok=True)
  dataset = dataset or load_data(config)
  train, test = dataset['train'], dataset['test']
  labels = labels_for_mode(train['label'], mode, seed=config.seed + 1)
  np.save(os.path.join(run_dir, 'train_labels.npy'), labels)

  model = cj.models.MLP(list(config.model.widths), rngs=nnx.Rngs(config.seed))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  optimizer = optax.sgd(config.train.learning_rate)
  size, batch_size = train['image'].shape[0], config.train.batch_size
  if batch_size <= 0 or batch_size > size:
    raise ValueError(f'config.train.batch_size: got {batch_size}; pass 1..{size}.')
  steps_per_epoch = size // batch_size
  total = steps_per_epoch * config.train.epochs
  dense_until = steps_per_epoch * config.measure.dense_epochs

  images, train_labels = jnp.asarray(train['image']), jnp.asarray(labels)
  sample = {'image': images[:config.measure.sample_size],
            'label': train_labels[:config.measure.sample_size]}
  test_images, test_labels = jnp.asarray(test['image']), jnp.asarray(test['label'])
  sgd_step = train_step_fn(loss_fn, optimizer)
  accuracy = accuracy_fn(loss_fn)

  def train_step(state, step):
    idx = batch_indices(config.seed, step, batch_size, size)
    batch = {'image': images[idx], 'label': train_labels[idx]}
    params, opt_state = sgd_step(state['params'], state['opt_state'], batch)
    return {'params': params, 'opt_state': opt_state}

  def measure(state, step):
    params = state['params']
    stats = cj.coherence_stats(loss_fn, params, sample,
                               microbatch_size=config.measure.microbatch_size,
                               method=config.measure.method)
    row = measurement_row(step, steps_per_epoch, stats)
    row['train_accuracy'] = float(accuracy(params, images, train_labels))
    row['test_accuracy'] = float(accuracy(params, test_images, test_labels))
    return row

  def log(row):
    if row['step'] % steps_per_epoch == 0:
      print(f'[{mode}] epoch {row["epoch"]:5.1f} step {row["step"]:5d} '
            f'm-coherence {row["m_coherence"]:7.2f} '
            f'train {row["train_accuracy"]:.3f} test {row["test_accuracy"]:.3f} '
            f'({row["seconds"]:.0f}s)', flush=True)

  started = time.time()
  rows = training_loop.run(
      run_dir, state={'params': params, 'opt_state': optimizer.init(params)},
      total_steps=total, train_step=train_step, measure=measure,
      measure_steps=set(schedule.measurement_steps(
          total, dense_until, config.measure.growth)),
      checkpoint_every=steps_per_epoch * config.train.checkpoint_every_epochs,
      on_step=on_step, log=log)

  summary = summarize(rows, dense_until)
  summary['seconds'] = time.time() - started
  jsonl.write_json(summary_path, summary)
  return summary

