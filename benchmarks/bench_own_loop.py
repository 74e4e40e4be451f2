r"""value_and_grad (gradient + coherence, one pass) vs jax.value_and_grad.

For each model, in one interleaved run (`harness.time_interleaved`, medians),
times three jitted functions of (params, batch):
  plain       `jax.value_and_grad` of the mean loss (a training step's work);
  one_pass    `coherence_jax.value_and_grad`: mean loss, mean gradient and the
              batch's CoherenceStats from ONE backward pass (ghost norms);
  two_passes  the plain gradient plus a separate `coherence_stats` call (what
              the experiments' measurement steps on a training batch used to pay).
Prints their ratios to `plain` as a markdown table (benchmarks/
README_own_loop.md) and one JSON line.

Models: 'cnn' (`models.CNN`, 28x28x1, 10 classes, 0.42M params) and
'transformer' (`models.Transformer`, GPT-style: 6 layers, d_model 256, 4
heads, T 128, vocab 512, tied embeddings, next-token loss; 4.9M params).

Run:
  .venv/bin/python -m benchmarks.bench_own_loop [--configs=cnn:128,transformer:16] [--reps=5]
  .venv/bin/python -m benchmarks.bench_own_loop --configs=cnn:8,tiny_transformer:4 --reps=1
"""

import json
import platform
from typing import Any, Dict, List

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj
from benchmarks import harness
from coherence_jax.models import losses

_CONFIGS = flags.DEFINE_list('configs', ['cnn:128', 'transformer:16'],
                             'model:batch pairs (cnn, transformer, '
                             'tiny_transformer).')
_REPS = flags.DEFINE_integer('reps', 5, 'Timed rounds (each runs every '
                             'function once, in a shuffled order).')


def make(model: str, batch: int):
  """(loss_fn, params, batch, description) of a model at a batch size."""
  key = jax.random.key(0)
  if model == 'cnn':
    net = nnx.jit(lambda: cj.models.CNN(rngs=nnx.Rngs(0)))()
    loss_fn, params = cj.from_nnx(net, losses.cross_entropy_loss)
    k1, k2 = jax.random.split(key)
    data = {'image': jax.random.normal(k1, (batch, 28, 28, 1)),
            'label': jax.random.randint(k2, (batch,), 0, 10)}
    return loss_fn, params, data, 'CNN 28x28x1'
  if model in ('transformer', 'tiny_transformer'):
    tiny = model == 'tiny_transformer'
    d, layers, length, vocab = (32, 1, 16, 64) if tiny else (256, 6, 128, 512)
    net = nnx.jit(lambda: cj.models.Transformer(
        vocab_size=vocab, d_model=d, num_heads=4, num_layers=layers,
        max_len=length, rngs=nnx.Rngs(0)))()
    loss_fn, params = cj.from_nnx(net, losses.next_token_loss)
    data = {'tokens': jax.random.randint(key, (batch, length + 1), 0, vocab)}
    return loss_fn, params, data, (f'Transformer {layers}x d{d} T{length} '
                                   f'V{vocab}')
  raise app.UsageError(f'--configs: unknown model {model!r}; pass cnn, '
                       'transformer or tiny_transformer.')


def bench(model: str, batch: int, reps: int) -> Dict[str, Any]:
  loss_fn, params, data, what = make(model, batch)
  plain = jax.jit(jax.value_and_grad(
      lambda p, b: jnp.mean(loss_fn(p, b))))
  one_pass = jax.jit(cj.value_and_grad(loss_fn, check_independence=False))
  stats_only = jax.jit(lambda p, b: cj.coherence_stats(
      loss_fn, p, b, check_independence=False))

  def two_passes():
    return plain(params, data), stats_only(params, data)

  # The one-pass gradient is the plain one (float32 summation order aside).
  want = plain(params, data)[1]
  got = one_pass(params, data)[1]
  # Relative to the largest entry of the whole gradient (a leaf whose
  # gradient is 0 in exact arithmetic, e.g. attention's key bias, holds
  # rounding only).
  top = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(want))
  err = max(float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))) / top
  times = harness.time_interleaved(
      {'plain': lambda: plain(params, data),
       'one_pass': lambda: one_pass(params, data),
       'two_passes': two_passes}, reps=reps)
  base = times['plain']['median_ms']
  return {
      'model': what, 'batch': batch,
      'params': sum(x.size for x in jax.tree.leaves(params)),
      'plain_ms': base,
      'one_pass_ms': times['one_pass']['median_ms'],
      'two_passes_ms': times['two_passes']['median_ms'],
      'one_pass_ratio': times['one_pass']['median_ms'] / base,
      'two_passes_ratio': times['two_passes']['median_ms'] / base,
      'max_rel_grad_diff': err,
      'norm_paths': sorted(set(cj.norm_paths(loss_fn, params, data).values())),
  }


def main(argv: List[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  results = []
  for spec in _CONFIGS.value:
    model, _, batch = spec.partition(':')
    results.append(bench(model, int(batch or 8), _REPS.value))
  print(f'{jax.devices()[0].device_kind} ({platform.machine()}), jax '
        f'{jax.__version__}, {_REPS.value} rounds, medians:')
  print(harness.markdown_table(
      ['model', 'B', 'params', 'plain ms', 'value_and_grad ms', 'ratio',
       'plain + coherence_stats ms', 'ratio', 'max rel. grad diff'],
      [[r['model'], r['batch'], f"{r['params']:,}", f"{r['plain_ms']:.1f}",
        f"{r['one_pass_ms']:.1f}", f"{r['one_pass_ratio']:.2f}",
        f"{r['two_passes_ms']:.1f}", f"{r['two_passes_ratio']:.2f}",
        f"{r['max_rel_grad_diff']:.1e}"] for r in results]))
  print(json.dumps(results))


if __name__ == '__main__':
  app.run(main)
