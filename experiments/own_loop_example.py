r"""Coherence in your own training loop: a flax NNX model, optax, jax.jit.

  python -m experiments.own_loop_example --workdir=/tmp/own_loop
  tensorboard --logdir /tmp/own_loop

A CNN on the offline MNIST subset (mnist5k), Adam, batch 128. Every
`--every` steps the step is taken with `coherence_jax.value_and_grad`, which
returns the update's gradient AND the batch's coherence statistics from the
same backward pass; the other steps use `jax.value_and_grad`. Logged to
TensorBoard (tensorboardX event files, no TensorFlow) and to metrics.jsonl:
loss, m-coherence (whole network and per module), the gradient noise scale
B_simple and its EMA (`coherence_jax.NoiseScaleEMA`), and the learning rate.
At the end the script times both kinds of step round-robin and prints the
overhead: a measured step costs ~1.0-1.1x a plain one (benchmarks/
README_own_loop.md), so measuring every N steps costs ~(ratio - 1)/N.

The loop, in short:

  loss_fn, params = cj.from_nnx(model, cross_entropy_loss)  # pure, per example
  grad_fn = cj.value_and_grad(loss_fn)                       # one pass
  schedule = cj.schedules.Schedule(every=every)

  @jax.jit
  def measured_step(params, opt_state, batch):
    (loss, stats), grads = grad_fn(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, stats

  for step in range(steps):
    if schedule.should_measure(step):
      params, opt_state, loss, stats = measured_step(params, opt_state, batch)
      writer.write_scalars(step, {'m_coherence': stats.m_coherence(), ...})
    else:
      params, opt_state, loss = plain_step(params, opt_state, batch)
"""

import os
import time
from typing import Any, Dict, Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import coherence_jax as cj
from coherence_jax.data.mnist5k import load_mnist5k
from coherence_jax.models import CNN
from coherence_jax.models import cross_entropy_loss
from experiments.common import metric_writers



def _define_flags() -> Dict[str, Any]:
  """The command line's flags (defined when run as a program only, so that
  importing `train` next to the experiments' mains defines nothing)."""
  return {
      'workdir': flags.DEFINE_string('workdir', None, 'Where event files and '
                                     'metrics.jsonl go.'),
      'steps': flags.DEFINE_integer('steps', 300, 'Training steps.'),
      'every': flags.DEFINE_integer('every', 10, 'Measure every this many '
                                    'steps.'),
      'batch_size': flags.DEFINE_integer('batch_size', 128, 'Examples per '
                                         'step.'),
      'learning_rate': flags.DEFINE_float('learning_rate', 1e-3, 'Adam '
                                          'learning rate.'),
      'timing_reps': flags.DEFINE_integer('timing_reps', 20, 'Timed steps of '
                                          'each kind for the overhead (0: '
                                          'none).'),
  }


def train(workdir: str, *, steps: int = 300, every: int = 10,
          batch_size: int = 128, learning_rate: float = 1e-3,
          timing_reps: int = 20, image_size: int = 28,
          train_size: Optional[int] = None) -> Dict[str, Any]:
  """Trains, logging coherence every `every` steps; returns a summary.

  Args:
    workdir: event files and metrics.jsonl are written here.
    steps, every, batch_size, learning_rate: the loop.
    timing_reps: steps of each kind timed for the overhead (0: no timing).
    image_size: crop the 28x28 images to this (tests use fewer pixels).
    train_size: use the first examples only (default: all 4,000).

  Returns:
    {'final_loss', 'last_m_coherence', 'noise_scale_ema', 'measured_steps',
     'plain_step_ms', 'measured_step_ms', 'overhead_ratio',
     'overhead_per_step' (the ratio's excess spread over `every` steps)}.
  """
  data = load_mnist5k(seed=0)['train']
  images = data['image'][:train_size, :image_size, :image_size].astype(
      np.float32)
  labels = data['label'][:train_size].astype(np.int32)

  model = CNN(num_classes=10, image_size=image_size, rngs=nnx.Rngs(0))
  loss_fn, params = cj.from_nnx(model, cross_entropy_loss)
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)
  grad_fn = cj.value_and_grad(loss_fn)   # grads + CoherenceStats, one pass

  @jax.jit
  def plain_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(loss_fn(p, batch)))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def measured_step(params, opt_state, batch):
    (loss, stats), grads = grad_fn(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, stats

  schedule = cj.schedules.Schedule(every=every, total_steps=steps - 1)
  ema = cj.NoiseScaleEMA.init()
  rng = np.random.default_rng(0)
  os.makedirs(workdir, exist_ok=True)
  writer = metric_writers.MultiWriter([
      metric_writers.JsonlWriter(os.path.join(workdir, 'metrics.jsonl'),
                                 truncate=True),
      metric_writers.TensorBoardWriter(workdir)])
  measured, last, loss = 0, {}, jnp.nan
  with writer:
    for step in range(steps):
      idx = rng.choice(len(labels), batch_size, replace=False)
      batch = {'image': images[idx], 'label': labels[idx]}
      if schedule.should_measure(step):
        params, opt_state, loss, stats = measured_step(params, opt_state,
                                                       batch)
        ema = ema.update(stats, decay=0.9)
        report = stats.report()   # host-side: per module, float64
        last = {'loss': float(loss), 'learning_rate': learning_rate,
                'm_coherence': report['m_coherence'],
                'noise_scale': report['noise_scale'],
                'noise_scale_ema': float(ema.noise_scale()),
                'modules': {name: {'m_coherence': e['m_coherence'],
                                   'noise_scale': e['noise_scale']}
                            for name, e in report['modules'].items()}}
        writer.write_row({'step': step, **last})
        measured += 1
      else:
        params, opt_state, loss = plain_step(params, opt_state, batch)

  summary = {'final_loss': float(loss),
             'last_m_coherence': last.get('m_coherence'),
             'noise_scale_ema': float(ema.noise_scale()),
             'measured_steps': measured}
  if timing_reps:
    summary.update(_overhead(plain_step, measured_step, params, opt_state,
                             batch, timing_reps, every))
  return summary


def _overhead(plain_step, measured_step, params, opt_state, batch, reps,
              every) -> Dict[str, float]:
  """Median ms of each kind of step, timed round-robin, and the overhead."""
  fns = {'plain': lambda: plain_step(params, opt_state, batch),
         'measured': lambda: measured_step(params, opt_state, batch)}
  times = {name: [] for name in fns}
  for fn in fns.values():
    jax.block_until_ready(fn())
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append((time.perf_counter() - start) * 1e3)
  plain, meas = (float(np.median(times[k])) for k in ('plain', 'measured'))
  ratio = meas / plain
  return {'plain_step_ms': plain, 'measured_step_ms': meas,
          'overhead_ratio': ratio, 'overhead_per_step': (ratio - 1) / every}


def main(argv, flag_values: Dict[str, Any]):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  values = {name: flag.value for name, flag in flag_values.items()}
  workdir = values.pop('workdir')
  if not workdir:
    raise app.UsageError('--workdir: pass a directory for the event files.')
  summary = train(workdir, **values)
  for key, value in summary.items():
    print(f'{key}: {value:.4g}' if isinstance(value, float)
          else f'{key}: {value}')
  if 'overhead_ratio' in summary:
    print(f'A measured step costs {summary["overhead_ratio"]:.2f}x a plain '
          f'one: measuring every {values["every"]} steps adds '
          f'{100 * summary["overhead_per_step"]:.1f} % per step.')


if __name__ == '__main__':
  _FLAGS = _define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
