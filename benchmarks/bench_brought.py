r"""α on models written the way researchers bring them: auto and vmap vs plain.

  .venv/bin/python -m benchmarks.bench_brought [--batch=16] [--reps=5] \
      [--out_md=benchmarks/README_brought.md]

Models (`benchmarks/brought_models.py`, T = 64 positions, vocabulary 256):
  gemma       2 Gemma-style blocks, d 64, 4 heads of 16, fused qkv
              'BTD,SNDH->SBTNH', own RMSNorm class, ScaledEmbed, gated MLP
  gemma_gqa   the same with grouped-query kv 'BTD,CKDH->CBTKH' (1 kv head)
  gemma_rule  gemma with `register_ghost_rule(GemmaRMSNorm, ...)`
  pos_table   GPT-style with a raw nnx.Param position table in the root
One process times, round-robin (`harness.time_interleaved`, median of the
reps after a warm-up that compiles): the plain gradient of the mean loss,
`coherence_stats(method='auto')` and `method='vmap'`; compiled temp + output
bytes from XLA's memory analysis; and the m-coherence of both methods.
"""

import jax
import jax.numpy as jnp
from absl import app
from absl import flags

import coherence_jax as cj
from benchmarks import brought_models as bm
from benchmarks import harness

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch', 16, 'examples per batch')
flags.DEFINE_integer('length', 64, 'positions per example')
flags.DEFINE_integer('reps', 5, 'timed rounds')
flags.DEFINE_string('out_md', None, 'also write the table here')

VOCAB = 256


def models():
  big = dict(vocab=VOCAB, dim=64, heads=4, head_dim=16, layers=2)
  return {
      'gemma': lambda: bm.GemmaLM(kv_heads=4, **big),
      'gemma_gqa': lambda: bm.GemmaLM(kv_heads=1, **big),
      'gemma_rule': lambda: bm.GemmaLM(kv_heads=4, **big),
      'pos_table': lambda: bm.PositionTableLM(vocab=VOCAB, dim=64,
                                              length=FLAGS.length),
  }


def measure(name, make, batch):
  if name == 'gemma_rule':
    cj.register_ghost_rule(bm.GemmaRMSNorm, bm.gemma_rms_sq_norms)
  try:
    loss_fn, params = cj.from_nnx(make(), bm.lm_loss)
    paths = cj.norm_paths(loss_fn, params, batch)
    plain = jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))
    auto = jax.jit(lambda p, b: cj.coherence.coherence_stats(
        loss_fn, p, b, method='auto'))
    vmap = jax.jit(lambda p, b: cj.coherence.coherence_stats(
        loss_fn, p, b, method='vmap'))
    fns = {'plain': plain, 'auto': auto, 'vmap': vmap}
    times = harness.time_interleaved(
        {k: (lambda f=f: f(params, batch)) for k, f in fns.items()},
        reps=FLAGS.reps, warmup=1)
    mem = {k: harness.compiled_bytes(f, params, batch) for k, f in fns.items()}
    coh = {k: float(fns[k](params, batch).m_coherence())
           for k in ('auto', 'vmap')}
  finally:
    cj.unregister_ghost_rule(bm.GemmaRMSNorm)
  ways = sorted(set(paths.values()))
  base, base_mem = times['plain']['median_ms'], mem['plain']
  return [name, sum(x.size for x in jax.tree.leaves(params)), ', '.join(ways),
          f"{base:.1f}",
          f"{times['auto']['median_ms'] / base:.2f}x",
          f"{times['vmap']['median_ms'] / base:.2f}x",
          f"{mem['auto'] / base_mem:.2f}x", f"{mem['vmap'] / base_mem:.2f}x",
          f"{coh['auto']:.5g} / {coh['vmap']:.5g}"]


def main(argv):
  del argv
  tokens = jax.random.randint(jax.random.key(0),
                              (FLAGS.batch, FLAGS.length + 1), 1, VOCAB)
  tokens = tokens.at[::2, FLAGS.length // 2:].set(0)  # padded examples
  batch = {'tokens': tokens}
  rows = [measure(name, make, batch) for name, make in models().items()]
  table = harness.markdown_table(
      ['model', 'params', 'ways (norm_paths)', 'plain ms', 'auto time',
       'vmap time', 'auto memory', 'vmap memory',
       'm-coherence auto / vmap'], rows)
  print(table)
  if FLAGS.out_md:
    with open(FLAGS.out_md, 'w') as f:
      f.write(f'# Brought models (B = {FLAGS.batch}, T = {FLAGS.length}, '
              f'{jax.devices()[0].platform})\n\n`python -m '
              'benchmarks.bench_brought`; ratios to the plain gradient of '
              'the mean loss, taken in one process.\n\n' + table + '\n')


if __name__ == '__main__':
  app.run(main)
