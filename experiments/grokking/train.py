"""Grokking: train a transformer on (a + b) mod p, measure m-coherence, report.

One run in `workdir` (resumable; a finished run is not repeated): a 1-layer
decoder-only `Transformer` reads [a, b, '='] and is trained, full batch, with
AdamW (weight decay 1.0) to predict (a + b) mod p at the last position. At
log-spaced steps it measures, on two FIXED samples (training pairs and
held-out pairs), the m-coherence of per-example gradients, whole network and
per module, and the accuracy and loss on all training and held-out pairs;
the step itself measures its own training batch ('batch_*': m-coherence,
noise scale) from its one backward pass.

Writes workdir/config.json (first start), metrics.jsonl, checkpoints/,
summary.json, report.md and grokking.png. Training is data-parallel over
`config.mesh.data` devices (see experiments/common/distributed.py); in a
multi-process run only process 0 writes.

Example:
  >>> from experiments.grokking.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/grokking_tiny')
  >>> summary['final']['test_accuracy'] > 0.9
  True
"""

import math
import os
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

import coherence_jax as cj
from coherence_jax import _checks
from coherence_jax import sharding
from coherence_jax.models import losses
from coherence_jax.models import registry
from experiments.common import data as common_data
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import run_config
from experiments.common import train_step as train_step_lib
from experiments.common import validation
from experiments.grokking import data
from experiments.grokking import report

SAMPLES = ('train', 'heldout')  # measured samples -> rows' key prefixes


def _finite_in(config: ml_collections.ConfigDict, field: str, low: float,
               high: float = math.inf, example: str = '0.1') -> None:
  """config.<field> (dotted) is a finite number in [low, high)."""
  section, _, name = field.rpartition('.')
  value = config[section][name] if section else config[name]
  validation.check(isinstance(value, (int, float)) and math.isfinite(value)
                   and low <= value < high, field, value,
                   f'pass a finite number in [{low}, {high}), e.g. {example}')


def validate(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the first bad field of `config` (nothing is written)."""
  validation.positive_int(config, 'seed', minimum=0)
  validation.positive_int(config, 'data.split_seed', minimum=0)
  validation.positive_int(config, 'data.modulus', minimum=2)
  p, fraction = config.data.modulus, config.data.train_fraction
  n = (data.train_size(p, fraction)
       if isinstance(fraction, (int, float)) and math.isfinite(fraction) else 0)
  validation.check(0 < n < p * p, 'data.train_fraction', fraction,
                   f'pass a fraction in (0, 1) leaving both the training and '
                   f'the held-out pairs non-empty (p² = {p * p}), e.g. 0.3')
  for field in ('d_model', 'num_heads', 'num_layers', 'mlp_ratio'):
    validation.positive_int(config, f'model.{field}')
  validation.check(config.model.d_model % config.model.num_heads == 0,
                   'model.num_heads', config.model.num_heads,
                   f'pass a divisor of model.d_model={config.model.d_model}')
  validation.check(isinstance(config.model.tie_embeddings, bool),
                   'model.tie_embeddings', config.model.tie_embeddings,
                   'pass True or False')
  lr = config.train.learning_rate
  validation.check(isinstance(lr, (int, float)) and math.isfinite(lr)
                   and lr > 0, 'train.learning_rate', lr,
                   'pass a finite number > 0, e.g. 1e-3')
  _finite_in(config, 'train.b1', 0.0, 1.0, '0.9')
  _finite_in(config, 'train.b2', 0.0, 1.0, '0.98')
  _finite_in(config, 'train.weight_decay', 0.0, example='1.0')
  validation.positive_int(config, 'train.warmup_steps', minimum=0)
  validation.positive_int(config, 'train.steps')
  validation.positive_int(config, 'train.checkpoint_every')
  batch_size = config.train.batch_size
  validation.check(_checks.is_int(batch_size) and (batch_size == -1
                                                  or 1 <= batch_size <= n),
                   'train.batch_size', batch_size,
                   f'pass -1 (full batch) or 1..{n} (the training pairs)')
  measure_lib.check(config, uses=('dense_until', 'sample_size',
                                  'held_out_sample_size', 'microbatch_size'),
                    train_size=n, held_out_size=p * p - n)
  validation.check_mesh(config)


class Model(NamedTuple):
  loss_fn: Callable[[Any, Any], jax.Array]   # (params, batch) -> [B] losses
  params: Any
  # (params, tokens, labels) -> (accuracy, mean loss), device scalars
  evaluate: Callable[[Any, jax.Array, jax.Array], Any]


def _correct(model: nnx.Module, batch) -> jax.Array:
  logits = model(batch['tokens'])[:, -1]
  return (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)


def make_model(config: ml_collections.ConfigDict) -> Model:
  """The config's 'transformer' (models registry) as (loss_fn, params,
  evaluate); it reads [a, b, '='] (3 tokens)."""
  m = config.model
  module = registry.build(
      'transformer', num_classes=data.vocab_size(config.data.modulus),
      input_shape=(3,), d_model=m.d_model, num_heads=m.num_heads,
      num_layers=m.num_layers, mlp_ratio=m.mlp_ratio,
      tie_embeddings=m.tie_embeddings, rngs=nnx.Rngs(config.seed))
  loss_fn, params = cj.from_nnx(module, losses.last_token_loss)
  correct_fn, _ = cj.from_nnx(module, _correct)

  @jax.jit
  def evaluate(params, tokens, labels):
    batch = {'tokens': tokens, 'label': labels}
    return (jnp.mean(correct_fn(params, batch)),
            jnp.mean(loss_fn(params, batch)))

  return Model(loss_fn, params, evaluate)


def learning_rate_schedule(config: ml_collections.ConfigDict):
  """Linear warm-up to the learning rate, then constant: step -> rate."""
  t = config.train
  return optax.warmup_constant_schedule(0.0, t.learning_rate,
                                        max(t.warmup_steps, 1))


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> optax.GradientTransformation:
  """AdamW with `learning_rate_schedule`."""
  t = config.train
  return optax.adamw(learning_rate_schedule(config), b1=t.b1, b2=t.b2,
                     weight_decay=t.weight_decay)


def coherence_numbers(stats: cj.CoherenceStats, prefix: str
                      ) -> Dict[str, Any]:
  """`prefix`_m_coherence, _alpha, ..., _modules {name: {m_coherence, share}}."""
  numbers = stats.report()
  q = float(sum(jax.device_get(jax.tree.leaves(stats.sq_norms()))))
  out = {f'{prefix}_{key}': numbers[key] for key in (
      'm_coherence', 'alpha', 'alpha_unbiased', 'gradient_diversity',
      'noise_scale')}
  out[f'{prefix}_mean_sq_grad_norm'] = q / numbers['count']
  out[f'{prefix}_modules'] = {
      name: {'m_coherence': entry['m_coherence'], 'share': entry['share']}
      for name, entry in numbers['modules'].items()}
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Any]:
  """Trains (or resumes) the run of `config` in `workdir`; returns its summary.

  Args:
    config: see configs/default.py.
    workdir: output directory; an existing one is resumed (same config only,
      unless config.allow_config_change).
    on_step: called before each training step (tests simulate crashes).

  Returns:
    report.summarize of the run's rows; also written to workdir/summary.json,
    with report.md and the plot grokking.png.
  """
  validate(config)
  writer = distributed.is_writer()
  run_config.check_and_save(config, workdir, writer)
  summary = loop.finished_summary(workdir)
  if summary is not None:  # finished: not trained again
    if writer:
      _write_report(config, workdir, files.read_rows(
          os.path.join(workdir, 'metrics.jsonl')), summary)
    return summary

  split = data.modular_addition(config.data.modulus,
                                config.data.train_fraction,
                                config.data.split_seed)
  train, test = split['train'], split['test']
  samples = {
      'train': jax.tree.map(lambda x: x[:config.measure.sample_size],
                            train),
      'heldout': jax.tree.map(
          lambda x: x[:config.measure.held_out_sample_size], test)}
  net = make_model(config)
  trainer = train_step_lib.make_trainer(
      train_step_lib.mean_grad(net.loss_fn), make_optimizer(config),
      distributed.make_mesh(config.mesh.data), method=config.measure.method)
  size, batch_size = train['label'].shape[0], config.train.batch_size
  device = jax.local_devices()[0]  # accuracies: on this process's device
  on_device = jax.device_put((train, test), device)

  def read(step):
    if batch_size == -1:
      return train, False
    idx = common_data.batch_indices(config.seed, step, batch_size, size)
    return jax.tree.map(lambda x: x[idx], train), False

  learning_rate = learning_rate_schedule(config)

  def measure(state, step):
    row = {}
    for name in SAMPLES:
      stats = sharding.sharded_coherence_stats(
          net.loss_fn, state['params'], samples[name], trainer.mesh,
          microbatch_size=config.measure.microbatch_size,
          method=config.measure.method)
      row.update(coherence_numbers(stats, name))
    params = distributed.local_copy(state['params'])
    for name, pairs in zip(('train', 'test'), on_device):
      accuracy, loss = net.evaluate(params, pairs['tokens'], pairs['label'])
      row[f'{name}_accuracy'], row[f'{name}_loss'] = float(accuracy), float(
          loss)
    row['param_norm'] = float(optax.tree.norm(params))
    row['learning_rate'] = float(learning_rate(step))
    return row

  total = config.train.steps
  every = config.train.checkpoint_every

  logged = [-1]  # the last logged step's checkpoint interval

  def log(row):  # the first measurement of each checkpoint interval, the last
    if row['step'] // every > logged[0] or row['step'] == total:
      logged[0] = row['step'] // every
      print(f'step {row["step"]:6d} train {row["train_accuracy"]:.3f} '
            f'test {row["test_accuracy"]:.3f} m-coherence train '
            f'{row["train_m_coherence"]:7.2f} held-out '
            f'{row["heldout_m_coherence"]:7.2f} ({row["seconds"]:.0f}s)',
            flush=True)

  rows = loop.fit(
      workdir, trainer=trainer, params=net.params, read=read,
      total_steps=total, measure=measure,
      measure_steps=measure_lib.steps(config.measure, total),
      checkpoint_every=every, on_step=on_step, log=log,
      metadata=run_config.metadata(config))
  summary = loop.write_summary(workdir, report.summarize(rows))
  if writer:
    _write_report(config, workdir, rows, summary)
  return summary


def _write_report(config: ml_collections.ConfigDict, workdir: str,
                  rows, summary: Dict[str, Any]) -> None:
  report.plot(rows, summary, os.path.join(workdir, 'grokking.png'),
              title=report.title(config))
  text = report.format_report(rows, summary, config)
  files.write_atomic(os.path.join(workdir, 'report.md'), text)
  print(report.format_summary_table(summary), flush=True)
