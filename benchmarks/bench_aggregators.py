"""Step time of SGD with each robust aggregator, relative to plain SGD.

Usage:
  .venv/bin/python benchmarks/bench_aggregators.py [--reps=5] [--cases=cnn128,cnn512,mlp100] [--no-memory]

Prints a markdown table. Plain SGD = jax.grad of the mean loss + optax.sgd.
Ratios are taken within the same run (the CPU is shared: use medians).
Memory: peak RSS of a fresh subprocess running the streaming winsorized
gradient at B = 256 and B = 4096 with the same micro-batch.
"""

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp
import optax

from coherence_jax import aggregators
from coherence_jax import per_example
from coherence_jax import robust_grad


def _dense(key, n_in, n_out):
  return {'w': jax.random.normal(key, (n_in, n_out)) * n_in ** -0.5,
          'b': jnp.zeros(n_out)}


def cnn_params(key):
  k = jax.random.split(key, 4)
  return {'conv1': {'w': jax.random.normal(k[0], (3, 3, 1, 32)) / 3,
                    'b': jnp.zeros(32)},
          'conv2': {'w': jax.random.normal(k[1], (3, 3, 32, 64)) / 17,
                    'b': jnp.zeros(64)},
          'fc1': _dense(k[2], 7 * 7 * 64, 128), 'fc2': _dense(k[3], 128, 10)}


def _conv(x, p):
  y = jax.lax.conv_general_dilated(x, p['w'], (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + p['b']


def _pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                               (1, 2, 2, 1), 'VALID')


def cnn_apply(p, x):
  x = _pool(jax.nn.relu(_conv(x, p['conv1'])))
  x = _pool(jax.nn.relu(_conv(x, p['conv2'])))
  x = x.reshape(x.shape[0], -1)
  x = jax.nn.relu(x @ p['fc1']['w'] + p['fc1']['b'])
  return x @ p['fc2']['w'] + p['fc2']['b']


def mlp_params(key):
  widths = [784, 256, 256, 256, 10]
  keys = jax.random.split(key, len(widths) - 1)
  return [_dense(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:])]


def mlp_apply(p, x):
  x = x.reshape(x.shape[0], -1)
  for layer in p[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  return x @ p[-1]['w'] + p[-1]['b']


def make_loss(apply):
  def loss_fn(params, batch):
    logits = apply(params, batch['image'])
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           batch['label'])
  return loss_fn


def make_batch(b, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.normal(size=(b, 28, 28, 1)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, 10, size=b), jnp.int32)}


def steps(loss_fn):
  """name -> (grad_fn(params, batch), first transform or None)."""
  mean_grad = jax.grad(lambda p, b: jnp.mean(loss_fn(p, b)))
  ex = lambda p, b: per_example.example_grads_unjitted(loss_fn, p, b)
  def grp3(p, b):  # 3 equal groups: drop the B mod 3 last examples (128 -> 126)
    n = jax.tree.leaves(b)[0].shape[0] // 3 * 3
    b = jax.tree.map(lambda x: x[:n], b)
    return per_example.group_grads_unjitted(loss_fn, p, b, 3)
  out = {'plain SGD': (mean_grad, None),
         'median of means k=3 (per_group_grads + coordinate_median)':
             (grp3, aggregators.coordinate_median()),
         'rolling median RM3': (mean_grad, aggregators.rolling_median(3)),
         'per-example grads + mean (winsorized c=0)':
             (ex, aggregators.winsorized_mean(0))}
  for c in (1, 2, 4):
    out[f'winsorized c={c}'] = (ex, aggregators.winsorized_mean(c))
  out['trimmed c=2'] = (ex, aggregators.trimmed_mean(2))
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


def run_case(name, apply, params, b, reps):
  loss_fn = make_loss(apply)
  batch = make_batch(b)
  rows, base = [], None
  for label, (grad_fn, first) in steps(loss_fn).items():
    if b > 256 and 'winsorized c=4' not in label and 'c=' in label and (
        'c=0' not in label):
      continue  # keep the large-batch run short: one robust case suffices
    sec, comp = time_step(loss_fn, params, batch, grad_fn, first, reps)
    base = sec if base is None else base
    rows.append((name, b, label, sec * 1e3, sec / base, comp))
    print(f'| {name} | {b} | {label} | {sec * 1e3:.1f} | {sec / base:.2f}x '
          f'| {comp:.1f} |', flush=True)
  return rows


MEM_CHILD = '''
import resource, sys, jax, jax.numpy as jnp
sys.path.insert(0, 'benchmarks')
import bench_aggregators as ba
from coherence_jax import robust_grad
b, m = int(sys.argv[1]), int(sys.argv[2])
params = ba.cnn_params(jax.random.PRNGKey(0))
batch = ba.make_batch(b)
g = robust_grad.winsorized_mean_grad(ba.make_loss(ba.cnn_apply), params, batch,
                                     c=4, microbatch_size=m)
jax.block_until_ready(g)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def peak_rss_mb(b, m):
  out = subprocess.run([sys.executable, '-c', MEM_CHILD, str(b), str(m)],
                       capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1]) / 1024


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--cases', default='cnn128,mlp100,cnn512')
  parser.add_argument('--no-memory', action='store_true')
  args = parser.parse_args()
  print(f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{jax.device_count()} device(s)')
  print('| model | batch | method | step ms | vs plain SGD | compile s |')
  print('|---|---|---|---|---|---|')
  key = jax.random.PRNGKey(0)
  for case in args.cases.split(','):
    if case.startswith('cnn'):
      run_case('CNN 421,642', cnn_apply, cnn_params(key), int(case[3:]),
               args.reps)
    else:
      run_case('MLP 784-256-256-256-10', mlp_apply, mlp_params(key),
               int(case[3:]), args.reps)
  if not args.no_memory:
    m = 64
    small, large = peak_rss_mb(256, m), peak_rss_mb(4096, m)
    print(f'\nstreaming winsorized_mean_grad (CNN, c=4, microbatch {m}): peak '
          f'RSS B=256 {small:.0f} MB, B=4096 {large:.0f} MB, '
          f'ratio {large / small:.2f}')


if __name__ == '__main__':
  main()
