r"""coherence_stats versus a plain gradient on the benchmark CNN, one run.

  .venv/bin/python benchmarks/bench_coherence.py [--batches=128,512] [--reps=10]

Prints a markdown table: time (median, min-max) and the ratio to a plain
`jax.grad` of the mean loss taken in the same run (interleaved), XLA temp+output
bytes, and the peak RSS of a fresh process running only that case.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj
from coherence_jax import coherence
from benchmarks import harness

_BATCHES = flags.DEFINE_list('batches', ['128', '512'], 'Batch sizes.')
_REPS = flags.DEFINE_integer('reps', 10, 'Timed repetitions per case.')
_CASE = flags.DEFINE_string('case', None, 'Run one case "method:batch" and '
                            'print its peak RSS (used for fresh processes).')


def cnn_problem(batch_size: int):
  loss_fn, params = cj.from_nnx(cj.models.CNN(rngs=nnx.Rngs(0)),
                                cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.uniform(k1, (batch_size, 28, 28, 1)),
           'label': jax.random.randint(k2, (batch_size,), 0, 10)}
  return loss_fn, params, batch


def case_fns(loss_fn, params, batch):
  """name -> (jitted function, args, kwargs)."""
  plain = jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))
  cases = {'plain grad': (plain, (params, batch), {})}
  for method in coherence.METHODS:
    cases[f'coherence_stats {method}'] = (
        cj.coherence_stats, (loss_fn, params, batch), {'method': method})
  cases['coherence_stats vmap mb=64'] = (
      cj.coherence_stats, (loss_fn, params, batch),
      {'method': 'vmap', 'microbatch_size': 64})
  return cases


def run_one_case(spec: str) -> None:
  name, batch_size = spec.rsplit(':', 1)
  loss_fn, params, batch = cnn_problem(int(batch_size))
  fn, args, kwargs = case_fns(loss_fn, params, batch)[name]
  for _ in range(3):
    jax.block_until_ready(fn(*args, **kwargs))
  print(json.dumps({'peak_rss_mib': harness.max_rss_mib()}))


def main(argv):
  del argv
  if _CASE.value:
    run_one_case(_CASE.value)
    return
  rows = []
  for batch_size in map(int, _BATCHES.value):
    loss_fn, params, batch = cnn_problem(batch_size)
    cases = case_fns(loss_fn, params, batch)
    timings = harness.time_interleaved(
        {n: (lambda f=f, a=a, k=k: f(*a, **k)) for n, (f, a, k) in cases.items()},
        reps=_REPS.value)
    base = timings['plain grad']['median_ms']
    base_rss = None
    for name, (fn, args, kwargs) in cases.items():
      t = timings[name]
      xla_mib = harness.compiled_bytes(
          fn if name == 'plain grad' else jax.jit(
              lambda *a, k=kwargs: cj.coherence_stats(*a, **k),
              static_argnums=0), *args) / 2**20
      rss = harness.peak_rss_of(__file__, [f'--case={name}:{batch_size}'])
      base_rss = base_rss or rss
      rows.append([batch_size, name, f"{t['median_ms']:.1f}",
                   f"{t['min_ms']:.1f}-{t['max_ms']:.1f}",
                   f"{t['median_ms'] / base:.2f}x", f'{xla_mib:.1f}',
                   f'{rss:.0f}', f'{rss / base_rss:.2f}x'])
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'{os.cpu_count()} CPUs, {_REPS.value} reps interleaved')
  print(harness.markdown_table(
      ['batch', 'method', 'median ms', 'min-max ms', 'time / plain',
       'XLA temp+out MiB', 'peak RSS MiB', 'RSS / plain'], rows))


if __name__ == '__main__':
  app.run(main)
