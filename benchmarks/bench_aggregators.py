r"""Step time of SGD with each robust aggregator, relative to plain SGD.

  .venv/bin/python -m benchmarks.bench_aggregators [--reps=5] \
      [--cases=cnn128,mlp100,cnn512] [--methods="plain SGD,winsorized c=4"] \
      [--nomemory]

Prints a markdown table. Plain SGD = jax.grad of the mean loss + optax.sgd.
Every row runs in a fresh process (`--child`), which reports the median step
time, the XLA compile time alone (wall), the first call's wall time (trace
+ lower + compile + one step) and its CPU time, and the process's peak RSS
(VmHWM: the compiler included). Ratios are taken within the same run (the
CPU is shared: use medians; the load average is printed per row). Then the --interleave methods (plain SGD and winsorized
c=4 by default) are timed round-robin in one process per case, so that load
changes hit them alike (`harness.time_interleaved`).
Winsorized / trimmed rows use `aggregators.factored_grads` (Dense kernels as
outer-product factors, fused into the selection network) + the optax
aggregator; the "old path" row uses vmap per-example grads
(`cj.per_example_grads`).
Memory: peak RSS (VmHWM) of a fresh process running the streaming
`cj.winsorized_mean_grad` at B = 256 and B = 4096, micro-batch 128, and the
wall time of that one call.
"""

import functools
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
_METHODS = flags.DEFINE_list(
    'methods', None, 'Only these table rows (method labels as printed, '
    'e.g. "plain SGD,winsorized c=4"); default: every method of the case.')
_MEMORY = flags.DEFINE_bool('memory', True, 'Also measure the streaming '
                            'winsorized gradient\'s peak RSS (--nomemory: '
                            'skip).')
_CHILD = flags.DEFINE_string('child', None, 'Internal: "CASE,INDEX", time '
                             'method INDEX of case CASE in this process and '
                             'print JSON.')
_INTERLEAVE = flags.DEFINE_list(
    'interleave', ['plain SGD', 'winsorized c=4'],
    'Methods whose steps are also timed round-robin in one process (after '
    'the table): load changes hit them alike. Empty: skip.')
_INTERLEAVE_CHILD = flags.DEFINE_string('interleave_child', None, 'Internal: '
                                        'CASE, time --interleave methods.')
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


def time_step(params, batch, grad_fn, first, reps):
  """Times one jitted step: a dict of seconds.

  step_s: median step; first_call_s / first_call_cpu_s: the first call
  (trace + lower + XLA compile + one step), wall and CPU; compile_s: the
  XLA compile alone (wall), the part that grows with the selection networks.
  """
  tx = optax.sgd(0.01) if first is None else optax.chain(first, optax.sgd(0.01))
  state = tx.init(params)

  def step(params, state, batch):
    updates, state = tx.update(grad_fn(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  t, cpu = time.perf_counter(), time.process_time()
  lowered = jax.jit(step).lower(params, state, batch)
  t_compile = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t_compile
  jax.block_until_ready(compiled(params, state, batch))
  first_s, first_cpu_s = time.perf_counter() - t, time.process_time() - cpu
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(params, state, batch))
    times.append(time.perf_counter() - t)
  return {'step_s': float(np.median(times)), 'first_call_s': first_s,
          'first_call_cpu_s': first_cpu_s, 'compile_s': compile_s}


def model_of(case):
  """(table name, (loss_fn, params), batch size) of a case like 'cnn128'."""
  if case.startswith('cnn'):
    return 'CNN 421,642', cnn(), int(case[3:])
  return 'MLP 784-256-256-256-10', mlp(), int(case[3:])


def child(case, index, reps):
  """Times method `index` of `case` in this (fresh) process; prints JSON."""
  _, (loss_fn, params), b = model_of(case)
  label, (grad_fn, first) = list(steps(loss_fn, b).items())[index]
  times = time_step(params, make_batch(b), grad_fn, first, reps)
  print(json.dumps({'label': label, **times,
                    'peak_rss_mib': harness.max_rss_mib()}))


def interleave_child(case, reps):
  """Times the --interleave methods of `case` round-robin; prints JSON."""
  _, (loss_fn, params), b = model_of(case)
  batch = make_batch(b)
  methods = steps(loss_fn, b)
  fns = {}
  for label in _INTERLEAVE.value:
    if label not in methods:
      continue
    grad_fn, first = methods[label]
    tx = (optax.sgd(0.01) if first is None
          else optax.chain(first, optax.sgd(0.01)))
    state = tx.init(params)
    step = jax.jit(lambda p, s, b, tx=tx, grad_fn=grad_fn: optax.apply_updates(
        p, tx.update(grad_fn(p, b), s, p)[0]))
    fns[label] = functools.partial(step, params, state, batch)
  print(json.dumps(harness.time_interleaved(fns, reps=reps, warmup=1)))


def run_case(case, reps):
  name, (loss_fn, _), b = model_of(case)
  rows, base = [], None
  labels = list(steps(loss_fn, b))
  for index, label in enumerate(labels):
    if _METHODS.value and label not in _METHODS.value:
      continue
    out = harness.last_json_line(harness.run_module(
        'benchmarks.bench_aggregators',
        [f'--child={case},{index}', f'--reps={reps}']).stdout)
    sec = out['step_s']
    base = sec if base is None else base
    row = (name, b, out['label'], sec * 1e3, sec / base, out['compile_s'],
           out['first_call_s'], out['first_call_cpu_s'], out['peak_rss_mib'],
           os.getloadavg()[0])
    rows.append(row)
    print('| {} | {} | {} | {:.1f} | {:.2f}x | {:.1f} | {:.1f} | {:.1f} | '
          '{:.0f} | {:.1f} |'.format(*row), flush=True)
  return rows


def mem_child(b, m, c):
  """Runs the streaming winsorized gradient once; prints peak RSS as JSON."""
  loss_fn, params = cnn()
  batch = make_batch(b)
  t = time.perf_counter()
  g = cj.winsorized_mean_grad(loss_fn, params, batch, c=c, microbatch_size=m)
  jax.block_until_ready(g)
  print(json.dumps({'peak_rss_mib': harness.max_rss_mib(),
                    'first_call_s': time.perf_counter() - t}))


def main(argv):
  del argv
  if _MEM_CHILD.value:
    mem_child(*map(int, _MEM_CHILD.value.split(',')))
    return
  if _INTERLEAVE_CHILD.value:
    interleave_child(_INTERLEAVE_CHILD.value, _REPS.value)
    return
  if _CHILD.value:
    case, index = _CHILD.value.split(',')
    child(case, int(index), _REPS.value)
    return
  print(f'jax {jax.__version__}, backend {jax.default_backend()}, '
        f'{jax.device_count()} device(s), load average {os.getloadavg()}')
  print('| model | batch | method | step ms | vs plain SGD | XLA compile s '
        '| first call s | its CPU s | peak RSS MiB | load |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for case in _CASES.value:
    run_case(case, _REPS.value)
  if _INTERLEAVE.value:
    print('\nInterleaved in one process (median ms of '
          f'{max(_REPS.value, 10)} rounds; ratio to the first):')
    for case in _CASES.value:
      out = harness.last_json_line(harness.run_module(
          'benchmarks.bench_aggregators',
          [f'--interleave_child={case}', f'--reps={max(_REPS.value, 10)}',
           '--interleave=' + ','.join(_INTERLEAVE.value)]).stdout)
      base = next(iter(out.values()))['median_ms']
      print(f'{case}: ' + '; '.join(
          f'{k} {v["median_ms"]:.1f} ({v["median_ms"] / base:.2f}x)'
          for k, v in out.items()) + f' (load {os.getloadavg()[0]:.1f})',
            flush=True)
  if _MEMORY.value:
    m, c = 128, 4
    out = {b: harness.last_json_line(harness.run_module(
        'benchmarks.bench_aggregators', [f'--mem_child={b},{m},{c}']).stdout)
           for b in (256, 4096)}
    rss = {b: o['peak_rss_mib'] for b, o in out.items()}
    print(f'\nstreaming winsorized_mean_grad (CNN, c={c}, '
          f'microbatch {m}), peak RSS (VmHWM) of a fresh process: '
          f'B=256 {rss[256]:.0f} MiB, B=4096 {rss[4096]:.0f} MiB, '
          f'ratio {rss[4096] / rss[256]:.2f}; first call (trace, compile, '
          f'run) {out[256]["first_call_s"]:.1f} s / '
          f'{out[4096]["first_call_s"]:.1f} s, load {os.getloadavg()[0]:.1f}',
          flush=True)
  print(f'load average at end {os.getloadavg()}')


if __name__ == '__main__':
  app.run(main)
