r"""Step time of SGD with each robust aggregator, relative to plain SGD.

  .venv/bin/python -m benchmarks.bench_aggregators [--reps=5] \
      [--cases=cnn128,mlp100,cnn512] [--nomemory]

Prints a markdown table. Plain SGD = jax.grad of the mean loss + optax.sgd.
Ratios are taken within the same run (the CPU is shared: use medians).
Winsorized / trimmed rows use `aggregators.factored_grads` (Dense kernels as
outer-product factors, fused into the selection network) + the optax
aggregator; the "old path" row uses vmap per-example grads
(`cj.per_example_grads`).
Memory: peak RSS (VmHWM) of a fresh process running the streaming
`cj.winsorized_mean_grad` at B = 256 and B = 4096, micro-batch 128.
"""

import json
import os
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import coherence_jax as cj
from coherence_jax import aggregators
from coherence_jax import models
from benchmarks import harness

_REPS = flags.DEFINE_integer('reps', 5, 'Timed steps per method (median).',
                             lower_bound=1)
_CASES = flags.DEFINE_list('cases', ['cnn128', 'mlp100', 'cnn512'],
                           'Model and batch: cnnB (the 421,642-param CNN) or '
                           'mlpB (MLP 784-256-256-256-10).')
_MEMORY = flags.DEFINE_bool('memory', True, 'Also measure the streaming '
                            'winsorized gradient\'s peak RSS (--nomemory: '
                            'skip).')
_MEM_CHILD = flags.DEFINE_string('mem_child', None, 'Internal: "B,M,C", run '
                                 'the streaming gradient once and print its '
                                 'peak RSS.')

flags.register_validator(
    'cases', lambda cases: all(
        c[:3] in ('cnn', 'mlp') and c[3:].isdigit() and int(c[3:]) > 0
        for c in cases),
    message='--cases: pass model and batch as cnnB or mlpB, e.g. '
    'cnn128,mlp100.')


def cnn():
  return cj.from_nnx(models.CNN(rngs=nnx.Rngs(0)), models.cross_entropy_loss)


def mlp():
  return cj.from_nnx(
      models.MLP([784, 256, 256, 256, 10], rngs=nnx.Rngs(0)),
      models.cross_entropy_loss)


def make_batch(b, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.normal(size=(b, 28, 28, 1)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 10, size=b), jnp.int32)}


def steps(loss_fn, b):
  """name -> (grad_fn(params, batch), first transform or None)."""
  mean_grad = jax.grad(lambda p, b: jnp.mean(loss_fn(p, b)))
  ex = lambda p, b: cj.per_example_grads(loss_fn, p, b)
  fact = lambda p, b: aggregators.factored_grads(loss_fn, p, b)
  def grp3(p, b):  # 3 equal groups: drop the B mod 3 last examples (128 -> 126)
    n = jax.tree.leaves(b)[0].shape[0] // 3 * 3
    b = jax.tree.map(lambda x: x[:n], b)
    return cj.per_group_grads(loss_fn, p, b, 3)
  out = {'plain SGD': (mean_grad, None),
         'median of means k=3 (per_group_grads + coordinate_median)':
             (grp3, aggregators.coordinate_median()),
         'rolling median RM3': (mean_grad, aggregators.rolling_median(3))}
  if b <= 256:
    out['vmap per-example grads + mean (c=0)'] = (
        ex, aggregators.winsorized_mean(0))
    out['factored per-example grads + mean (c=0)'] = (
        fact, aggregators.winsorized_mean(0))
  for c in ((1, 2, 4) if b <= 256 else (4,)):
    out[f'winsorized c={c}'] = (fact, aggregators.winsorized_mean(c))
  if b <= 256:
    out['trimmed c=2'] = (fact, aggregators.trimmed_mean(2))
    out['winsorized c=4, vmap per-example grads (old path)'] = (
        ex, aggregators.winsorized_mean(4))
  return out


def time_step(loss_fn, params, batch, grad_fn, first, reps):
  tx = optax.sgd(0.01) if first is None else optax.chain(first, optax.sgd(0.01))
  state = tx.init(params)

  @jax.jit
  def step(params, state, batch):
    updates, state = tx.update(grad_fn(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  t = time.perf_counter()
  jax.block_until_ready(step(params, state, batch))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(step(params, state, batch))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), compile_s


def run_case(name, model, b, reps):
  loss_fn, params = model
  batch = make_batch(b)
  rows, base = [], None
  for label, (grad_fn, first) in steps(loss_fn, b).items():
    sec, comp = time_step(loss_fn, params, batch, grad_fn, first, reps)
    base = sec if base is None else base
    rows.append((name, b, label, sec * 1e3, sec / base, comp))
    print(f'| {name} | {b} | {label} | {sec * 1e3:.1f} | {sec / base:.2f}x '
          f'| {comp:.1f} |', flush=True)
  return rows


def mem_child(b, m, c):
  """Runs the streaming winsorized gradient once; prints peak RSS as JSON."""
  loss_fn, params = cnn()
  batch = make_batch(b)
  g = cj.winsorized_mean_grad(loss_fn, params, batch, c=c, microbatch_size=m)
  jax.block_until_ready(g)
  print(json.dumps({'peak_rss_mib': harness.max_rss_mib()}))


def main(argv):
  del argv
  if _MEM_CHILD.value:
    mem_child(*map(int, _MEM_CHILD.value.split(',')))
    return
  print(f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{jax.device_count()} device(s), load average {os.getloadavg()}')
  print('| model | batch | method | step ms | vs plain SGD | compile s |')
  print('|---|---|---|---|---|---|')
  for case in _CASES.value:
    if case.startswith('cnn'):
      run_case('CNN 421,642', cnn(), int(case[3:]), _REPS.value)
    else:
      run_case('MLP 784-256-256-256-10', mlp(), int(case[3:]), _REPS.value)
  if _MEMORY.value:
    m, c = 128, 4
    rss = {b: harness.peak_rss_of('benchmarks.bench_aggregators',
                                  [f'--mem_child={b},{m},{c}'])
           for b in (256, 4096)}
    print(f'\nstreaming winsorized_mean_grad (CNN, c={c}, '
          f'microbatch {m}), peak RSS (VmHWM) of a fresh process: '
          f'B=256 {rss[256]:.0f} MiB, B=4096 {rss[4096]:.0f} MiB, '
          f'ratio {rss[4096] / rss[256]:.2f}', flush=True)
  print(f'load average at end {os.getloadavg()}')


if __name__ == '__main__':
  app.run(main)
