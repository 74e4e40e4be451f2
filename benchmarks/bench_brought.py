r"""α on models written the way researchers bring them: auto and vmap vs plain.

  .venv/bin/python -m benchmarks.bench_brought [--batch=16] [--reps=5] \
      [--only=gemma,linen_lm] [--out_md=benchmarks/README_brought.md] \
      [--out_png=benchmarks/brought.png]

Models (`benchmarks/brought_models.py`, T = 64 positions, vocabulary 256):
  gemma           2 Gemma-style blocks, d 64, 4 heads of 16, fused qkv
                  'BTD,SNDH->SBTNH', own RMSNorm class, ScaledEmbed, gated MLP
  gemma_gqa       the same with grouped-query kv 'BTD,CKDH->CBTKH' (1 kv head)
  gemma_rule      gemma with `register_ghost_rule(GemmaRMSNorm, ...)`
  pos_table       GPT-style with a raw nnx.Param position table in the root
  nnx_scan, nnx_scan_remat, nnx_remat_loop
                  4 pre-LN MLP blocks, d 64: nnx.vmap-stacked and run by
                  nnx.scan (each under nnx.remat), or nnx.remat in a loop
  linen_lm        linen Transformer LM (lm1b's layout), 2 blocks, d 64
  linen_resnet_gn, linen_resnet_bn
                  linen ResNet (imagenet example blocks, widths 16-32-64) on
                  32x32x3, GroupNorm or inference-mode BatchNorm; loss through
                  `model.apply` in a plain function
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
flags.DEFINE_string('out_png', None, 'also plot the time ratios here')
flags.DEFINE_list('only', [], 'measure only these models')

VOCAB = 256


def _lm_batch():
  tokens = jax.random.randint(jax.random.key(0),
                              (FLAGS.batch, FLAGS.length + 1), 1, VOCAB)
  return {'tokens': tokens.at[::2, FLAGS.length // 2:].set(0)}  # padded


def _nnx(make):
  def build():
    loss_fn, params = cj.from_nnx(make(), bm.lm_loss)
    return loss_fn, params, _lm_batch()
  return build


def _linen_lm():
  model = bm.LinenLM(vocab=VOCAB, dim=64, heads=4, layers=2,
                     length=FLAGS.length)
  params = model.init(jax.random.key(0),
                      jnp.ones((1, FLAGS.length), jnp.int32))['params']

  def loss_fn(p, batch):   # as flax/examples/lm1b writes it, per example
    tokens = batch['tokens']
    logits = model.apply({'params': p}, tokens[:, :-1])
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0].mean(-1)
  return loss_fn, params, _lm_batch()


def _linen_resnet(norm):
  def build():
    model = bm.LinenResNet(widths=(16, 32, 64), classes=10, norm=norm)
    variables = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))
    others = {k: v for k, v in variables.items() if k != 'params'}
    loss_fn = bm.linen_classifier_loss(model, others)
    batch = {'x': jax.random.normal(jax.random.key(1),
                                    (FLAGS.batch, 32, 32, 3)),
             'y': jnp.arange(FLAGS.batch) % 10}
    return loss_fn, variables['params'], batch
  return build


def models():
  big = dict(vocab=VOCAB, dim=64, heads=4, head_dim=16, layers=2)
  scan = dict(vocab=VOCAB, dim=64, layers=4)
  return {
      'gemma': _nnx(lambda: bm.GemmaLM(kv_heads=4, **big)),
      'gemma_gqa': _nnx(lambda: bm.GemmaLM(kv_heads=1, **big)),
      'gemma_rule': _nnx(lambda: bm.GemmaLM(kv_heads=4, **big)),
      'pos_table': _nnx(lambda: bm.PositionTableLM(vocab=VOCAB, dim=64,
                                                   length=FLAGS.length)),
      'nnx_scan': _nnx(lambda: bm.ScanLM(mode='scan', **scan)),
      'nnx_scan_remat': _nnx(lambda: bm.ScanLM(mode='scan_remat', **scan)),
      'nnx_remat_loop': _nnx(lambda: bm.ScanLM(mode='remat_loop', **scan)),
      'linen_lm': _linen_lm,
      'linen_resnet_gn': _linen_resnet('group'),
      'linen_resnet_bn': _linen_resnet('batch'),
  }


def measure(name, build):
  if name == 'gemma_rule':
    cj.register_ghost_rule(bm.GemmaRMSNorm, bm.gemma_rms_sq_norms)
  try:
    loss_fn, params, batch = build()
    paths = cj.norm_paths(loss_fn, params, batch)
    times, mem, coh = harness.alpha_against_plain(loss_fn, params, batch,
                                                  FLAGS.reps)
  finally:
    cj.unregister_ghost_rule(bm.GemmaRMSNorm)
  ways = sorted(set(paths.values()))
  base, base_mem = times['plain']['median_ms'], mem['plain']
  ratios = {k: times[k]['median_ms'] / base for k in ('auto', 'vmap')}
  return [name, sum(x.size for x in jax.tree.leaves(params)), ', '.join(ways),
          f"{base:.1f}", f"{ratios['auto']:.2f}x", f"{ratios['vmap']:.2f}x",
          f"{mem['auto'] / base_mem:.2f}x", f"{mem['vmap'] / base_mem:.2f}x",
          f"{coh['auto']:.5g} / {coh['vmap']:.5g}"], ratios


def plot(names, ratios, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(9, 3.6))
  xs = range(len(names))
  ax.bar([x - 0.2 for x in xs], [r['auto'] for r in ratios], 0.4,
         label="method='auto'")
  ax.bar([x + 0.2 for x in xs], [r['vmap'] for r in ratios], 0.4,
         label="method='vmap'")
  ax.axhline(1.0, color='k', lw=0.8)
  ax.set_xticks(list(xs), names, rotation=30, ha='right')
  ax.set_ylabel('time / plain gradient')
  ax.set_title(f'α on brought models (B = {FLAGS.batch}, XLA:CPU)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  names, rows, ratios = [], [], []
  for name, build in models().items():
    if FLAGS.only and name not in FLAGS.only:
      continue
    row, ratio = measure(name, build)
    names.append(name)
    rows.append(row)
    ratios.append(ratio)
    print(row, flush=True)
  table = harness.markdown_table(
      ['model', 'params', 'ways (norm_paths)', 'plain ms', 'auto time',
       'vmap time', 'auto memory', 'vmap memory',
       'm-coherence auto / vmap'], rows)
  print(table)
  if FLAGS.out_md:
    with open(FLAGS.out_md, 'w') as f:
      f.write(f'# Brought models (B = {FLAGS.batch}, T = {FLAGS.length}, '
              f'{jax.devices()[0].platform})\n\n`python -m '
              'benchmarks.bench_brought`; times are medians of '
              f'{FLAGS.reps} round-robin rounds, ratios to the plain '
              'gradient of the mean loss taken in one process; memory is '
              "XLA's compiled temp + output bytes.\n\n" + table + '\n')
  if FLAGS.out_png:
    plot(names, ratios, FLAGS.out_png)


if __name__ == '__main__':
  app.run(main)
