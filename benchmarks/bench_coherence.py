r"""α by per-example vmap versus ghost norms, against a plain gradient: CNN.

  .venv/bin/python -m benchmarks.bench_coherence [--batches=128,512] \
      [--reps=10] [--rss_runs=3]

For the benchmark CNN (421,642 params, 28x28x1) at each batch size, prints a
markdown table: wall time (median, min-max over interleaved reps, so load on
the shared CPU hits every method alike) and its ratio to a plain `jax.grad` of
the mean loss in the same run; XLA's compiled temp+output bytes and their
ratio; the peak RSS of a fresh process running only that case (median of
--rss_runs processes) and its ratio, and that peak
above a fresh process that only built the problem ('idle'), with its ratio;
and the peak RSS growth while executing only (after `lower().compile()` the
peak is reset through /proc/self/clear_refs), which leaves out what the
compiler keeps (the compiled program, caches).
"""

import json
import os
import statistics

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj
from benchmarks import harness

_BATCHES = flags.DEFINE_list('batches', ['128', '512'], 'Batch sizes.')
_REPS = flags.DEFINE_integer('reps', 10, 'Timed repetitions per case.')
_RSS_RUNS = flags.DEFINE_integer(
    'rss_runs', 3, 'Fresh processes per case for the memory columns (median).',
    lower_bound=1)
_CASE = flags.DEFINE_string('case', None, 'Run one case "name:batch" and print '
                            'its peak RSS (used for fresh processes).')

IDLE = 'idle'


def cnn_problem(batch_size: int):
  loss_fn, params = cj.from_nnx(cj.models.CNN(rngs=nnx.Rngs(0)),
                                cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.uniform(k1, (batch_size, 28, 28, 1)),
           'label': jax.random.randint(k2, (batch_size,), 0, 10)}
  return loss_fn, params, batch


def case_fns(loss_fn):
  """name -> jitted f(params, batch)."""
  def alpha(method):
    return jax.jit(lambda p, b: cj.coherence_stats(loss_fn, p, b,
                                                   method=method).alpha())
  return {
      'plain grad': jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b)))),
      'alpha vmap': alpha('vmap'),
      'alpha ghost': alpha('ghost'),
      'alpha auto': alpha('auto'),
      'sq norms ghost': jax.jit(lambda p, b: cj.per_example_sq_norms(
          loss_fn, p, b, method='ghost')),
  }


def run_one_case(spec: str) -> None:
  name, batch_size = spec.rsplit(':', 1)
  loss_fn, params, batch = cnn_problem(int(batch_size))
  jax.block_until_ready((params, batch))
  run_mib = 0.0
  if name != IDLE:
    compiled = case_fns(loss_fn)[name].lower(params, batch).compile()
    peak = harness.max_rss_mib()
    after_compile = _reset_peak_rss()
    for _ in range(3):
      jax.block_until_ready(compiled(params, batch))
    run_mib = harness.max_rss_mib() - after_compile
    peak = max(peak, harness.max_rss_mib())
  else:
    peak = harness.max_rss_mib()
  print(json.dumps({'peak_rss_mib': peak, 'run_rss_mib': run_mib}))


def _reset_peak_rss() -> float:
  """Resets VmHWM to the current RSS (Linux); returns the current RSS in MiB."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
  except OSError:
    return float('nan')
  return harness.max_rss_mib()


def _fresh_process(spec: str):
  """Median (peak RSS, run-only RSS) over --rss_runs fresh processes."""
  peaks, runs = [], []
  for _ in range(_RSS_RUNS.value):
    result = harness.last_json_line(harness.run_module(
        'benchmarks.bench_coherence', [f'--case={spec}']).stdout)
    peaks.append(result['peak_rss_mib'])
    runs.append(result['run_rss_mib'])
  return statistics.median(peaks), statistics.median(runs)


def main(argv):
  del argv
  if _CASE.value:
    run_one_case(_CASE.value)
    return
  rows = []
  for batch_size in map(int, _BATCHES.value):
    loss_fn, params, batch = cnn_problem(batch_size)
    cases = case_fns(loss_fn)
    timings = harness.time_interleaved(
        {n: (lambda f=f: f(params, batch)) for n, f in cases.items()},
        reps=_REPS.value)
    idle = _fresh_process(f'{IDLE}:{batch_size}')[0]
    base = {}
    for name, fn in cases.items():
      t = timings[name]
      xla = harness.compiled_bytes(fn, params, batch) / 2**20
      rss, run = _fresh_process(f'{name}:{batch_size}')
      if not base:
        base = {'t': t['median_ms'], 'xla': xla, 'peak': rss,
                'rss': rss - idle, 'run': run}
      rows.append([
          batch_size, name, f"{t['median_ms']:.1f}",
          f"{t['min_ms']:.1f}-{t['max_ms']:.1f}",
          f"{t['median_ms'] / base['t']:.2f}x",
          f'{xla:.1f}', f"{xla / base['xla']:.3f}x",
          f'{rss:.0f}', f"{rss / base['peak']:.2f}x", f'{rss - idle:.0f}',
          f"{(rss - idle) / base['rss']:.2f}x",
          f'{run:.0f}', f"{run / base['run']:.2f}x"])
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} CPUs (shared), {_REPS.value} reps interleaved, '
        f'memory columns the median of {_RSS_RUNS.value} fresh processes')
  print(harness.markdown_table(
      ['batch', 'case', 'median ms', 'min-max ms', 'time / plain',
       'XLA temp+out MiB', 'XLA / plain', 'peak RSS MiB', 'peak / plain',
       'RSS above idle MiB', 'above idle / plain', 'run-only RSS MiB',
       'run-only / plain'], rows))


if __name__ == '__main__':
  app.run(main)
