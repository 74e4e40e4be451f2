"""Noisy-label sweep: memorization of corrupt examples per aggregator.

Each aggregator trains in `workdir/<name>/` (resumable; a finished run is not
repeated). Tracked: accuracy on pristine train examples, on corrupt train
examples w.r.t. their noisy labels (memorization), on the test set, and the
m-coherence of fixed pristine and corrupt samples.
"""

import os
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

import coherence_jax as cj
from coherence_jax import data as cj_data
from experiments import aggregator_specs
from experiments import coherence_run
from experiments import jsonl
from experiments import plots
from experiments import training_loop

SUMMARY_KEYS = ('final_test_accuracy', 'peak_test_accuracy', 'peak_test_step',
                'final_pristine_accuracy', 'final_corrupt_accuracy',
                'corrupt_accuracy_at_peak_test', 'seconds_per_step')


def run_dir_name(spec: str) -> str:
  return spec.replace(':', '_c')


def corruption(config, train_labels: np.ndarray, workdir: str) -> Dict[str, Any]:
  """Noisy labels and masks; saved once in the workdir with both fractions."""
  path = os.path.join(workdir, 'corruption.npz')
  if os.path.exists(path):
    with np.load(path) as saved:
      return dict(saved)
  out = cj_data.corrupt_labels(train_labels, config.noise.p, config.noise.seed)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **out)
  os.replace(tmp, path)
  jsonl.write_json(os.path.join(workdir, 'corruption.json'), {
      'p': config.noise.p, 'seed': config.noise.seed,
      'selected_fraction': float(out['selected'].mean()),
      'corrupt_fraction': float(out['corrupt'].mean())})
  return out


def run_aggregator(config: ml_collections.ConfigDict, workdir: str, spec: str,
                   dataset: Dict[str, Any], noisy: Dict[str, Any],
                   on_step: Optional[Callable[[int], None]] = None
                   ) -> Dict[str, Any]:
  run_dir = os.path.join(workdir, run_dir_name(spec))
  summary_path = os.path.join(run_dir, 'summary.json')
  if os.path.exists(summary_path):
    return jsonl.read_json(summary_path)
  train, test = dataset['train'], dataset['test']
  model = cj.models.MLP(list(config.model.widths), rngs=nnx.Rngs(config.seed))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  grad_fn, optimizer = aggregator_specs.build(spec, loss_fn,
                                              config.train.learning_rate)
  size, batch_size = train['image'].shape[0], config.train.batch_size
  steps_per_epoch = size // batch_size
  total = steps_per_epoch * config.train.epochs

  images, labels = jnp.asarray(train['image']), jnp.asarray(noisy['label'])
  corrupt = np.asarray(noisy['corrupt'])
  pristine_idx, corrupt_idx = np.flatnonzero(~corrupt), np.flatnonzero(corrupt)
  n_sample = config.measure.coherence_sample_size
  samples = {name: {'image': images[idx[:n_sample]], 'label': labels[idx[:n_sample]]}
             for name, idx in (('pristine', pristine_idx), ('corrupt', corrupt_idx))}
  test_images, test_labels = jnp.asarray(test['image']), jnp.asarray(test['label'])
  accuracy = coherence_run.accuracy_fn(loss_fn)

  @jax.jit
  def update(state, batch):
    grads = grad_fn(state['params'], batch)
    updates, opt_state = optimizer.update(grads, state['opt_state'],
                                          state['params'])
    return {'params': jax.tree.map(jnp.add, state['params'], updates),
            'opt_state': opt_state}

  def train_step(state, step):
    idx = coherence_run.batch_indices(config.seed, step, batch_size, size)
    return update(state, {'image': images[idx], 'label': labels[idx]})

  def measure(state, step):
    params = state['params']
    row = {'epoch': step / steps_per_epoch,
           'pristine_accuracy': float(accuracy(params, images[pristine_idx],
                                               labels[pristine_idx])),
           'corrupt_accuracy': float(accuracy(params, images[corrupt_idx],
                                              labels[corrupt_idx])),
           'test_accuracy': float(accuracy(params, test_images, test_labels))}
    for name, sample in samples.items():
      row[f'{name}_m_coherence'] = float(
          cj.coherence_stats(loss_fn, params, sample).m_coherence())
    return row

  def log(row):
    print(f'[{spec}] step {row["step"]:5d} pristine {row["pristine_accuracy"]:.3f}'
          f' corrupt {row["corrupt_accuracy"]:.3f} test {row["test_accuracy"]:.3f}'
          f' m-coh pristine {row["pristine_m_coherence"]:.1f} corrupt '
          f'{row["corrupt_m_coherence"]:.1f} ({row["seconds"]:.0f}s)', flush=True)

  every = config.measure.every_steps
  rows = training_loop.run(
      run_dir, state={'params': params, 'opt_state': optimizer.init(params)},
      total_steps=total, train_step=train_step, measure=measure,
      measure_steps=set(range(0, total, every)) | {total},
      checkpoint_every=steps_per_epoch * config.train.checkpoint_every_epochs,
      on_step=on_step, log=log)
  summary = summarize(rows)
  jsonl.write_json(summary_path, summary)
  return summary


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  peak = max(rows, key=lambda r: r['test_accuracy'])
  final = rows[-1]
  return {
      'final_test_accuracy': final['test_accuracy'],
      'peak_test_accuracy': peak['test_accuracy'],
      'peak_test_step': peak['step'],
      'final_pristine_accuracy': final['pristine_accuracy'],
      'final_corrupt_accuracy': final['corrupt_accuracy'],
      'corrupt_accuracy_at_peak_test': peak['corrupt_accuracy'],
      'seconds_per_step': final['seconds'] / max(final['step'], 1),
  }


def format_table(summary: Dict[str, Dict[str, Any]]) -> str:
  lines = ['| aggregator | ' + ' | '.join(SUMMARY_KEYS) + ' |',
           '|---|' + '---:|' * len(SUMMARY_KEYS)]
  for spec, numbers in summary.items():
    cells = [f'{numbers[k]:.3f}' if isinstance(numbers[k], float)
             else str(numbers[k]) for k in SUMMARY_KEYS]
    lines.append(f'| {spec} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, workdir: str,
        specs: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  specs = list(specs or config.aggregators)
  for spec in specs:  # fail before any training on a bad name
    aggregator_specs.build(spec, lambda p, b: p, 0.1)
  os.makedirs(workdir, exist_ok=True)
  dataset = coherence_run.load_data(config)
  noisy = corruption(config, dataset['train']['label'], workdir)
  summary, runs = {}, {}
  for spec in specs:
    summary[spec] = run_aggregator(config, workdir, spec, dataset, noisy)
    runs[spec] = jsonl.read_rows(os.path.join(workdir, run_dir_name(spec),
                                              'metrics.jsonl'))
  jsonl.write_json(os.path.join(workdir, 'summary.json'), summary)
  plots.plot_noisy_labels(runs, os.path.join(workdir, 'noisy_labels.png'))
  table = format_table(summary)
  jsonl.write_atomic(os.path.join(workdir, 'table.md'), table + '\n')
  print(table, flush=True)
  return summary
