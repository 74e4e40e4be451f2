r"""α on flax's own example models, as their code stands: auto and vmap vs plain.

  git clone https://github.com/google/flax /tmp/flax   # (or any checkout)
  pip install jaxtyping                                 # gemma's import
  .venv/bin/python -m benchmarks.check_flax_examples \
      --flax_examples=/tmp/flax/examples [--batch=16] [--length=64] \
      [--out_md=benchmarks/README_flax_examples.md]

Models, imported from the checkout unchanged (small sizes of their configs):
  gemma (NNX)       `transformer.Transformer`: 2 layers, d 64, 4 heads of 16,
                    1 kv head; with qkv_einsum, q/k norms, post-norms and
                    softcaps; grouped-query (2 kv heads). Its `ScaledEmbed`
                    and `RMSNorm` are classes of its own.
  lm1b (linen)      `models.TransformerLM`: 2 layers, d 64, sinusoidal and
                    learned position embeddings; loss through `model.apply`.
  imagenet (linen)  `models.ResNet18` on 32x32x3, BatchNorm in inference
                    (`train=False`, its batch statistics passed).
Losses are per example (each sequence normalized by its own token count).
Gemma's own `train.py` normalization (by the batch's token count) couples
the examples: the check asserts that it is refused. Per model, one process
times the plain gradient of the mean loss, `coherence_stats(method='auto')`
and `method='vmap'` round-robin (`harness.time_interleaved`) and compares
their m-coherence.
"""

import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

import coherence_jax as cj
from benchmarks import harness

FLAGS = flags.FLAGS
flags.DEFINE_string('flax_examples', None, 'the examples/ folder of a flax '
                    'checkout', required=True)
flags.DEFINE_integer('batch', 16, 'examples per batch')
flags.DEFINE_integer('length', 64, 'tokens per sequence')
flags.DEFINE_integer('reps', 5, 'timed rounds')
flags.DEFINE_string('out_md', None, 'also write the table here')

VOCAB = 256


def _import(example, *names):
  """The example's modules, imported from its folder (they import siblings)."""
  folder = os.path.join(FLAGS.flax_examples, example)
  sys.path.insert(0, folder)
  try:
    for name in names:  # examples share module names (models, train)
      sys.modules.pop(name, None)
    return [importlib.import_module(name) for name in names]
  finally:
    sys.path.remove(folder)


def _tokens(extra=0):
  tokens = np.array(jax.random.randint(
      jax.random.key(0), (FLAGS.batch, FLAGS.length + extra), 1, VOCAB))
  tokens[::2, FLAGS.length // 2:] = 0  # padded examples
  return {'tokens': jnp.asarray(tokens)}


def _per_example_nll(logits, targets):
  keep = targets != 0
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None],
                             -1)[..., 0]
  return -jnp.sum(logp * keep, -1) / jnp.maximum(jnp.sum(keep, -1), 1)


def gemma_cases():
  """{name: (loss_fn, params, batch)} of flax's Gemma, and its train loss."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  tl, tc = _import('gemma', 'transformer', 'transformer_cfg')

  def config(**kw):
    base = dict(num_layers=2, num_embed=VOCAB, embed_dim=64, hidden_dim=128,
                num_heads=4, head_dim=16, num_kv_heads=1,
                final_logit_softcap=None, use_post_attn_norm=False,
                use_post_ffw_norm=False,
                attention_types=(tc.AttentionType.GLOBAL,) * 2)
    return tc.TransformerConfig(**{**base, **kw})

  def logits_of(model, tokens):
    mask = tokens != 0
    return model(tokens, tl.build_positions_from_mask(mask), None,
                 tl.make_causal_attn_mask(mask))[0]

  def loss(model, batch):
    tokens = batch['tokens']
    return _per_example_nll(logits_of(model, tokens[:, :-1]), tokens[:, 1:])

  def train_py_loss(model, batch):  # examples/gemma/train.py's normalization
    tokens = batch['tokens']
    logits, targets = logits_of(model, tokens[:, :-1]), tokens[:, 1:]
    keep = (targets != 0).astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None],
                               -1)[..., 0] * keep
    return nll.sum(1) * len(nll) / keep.sum()

  configs = {
      'gemma, 1 kv head': config(),
      'gemma, qkv_einsum, q/k norms, post-norms, softcaps': config(
          num_kv_heads=4, use_qk_norm=True, use_post_attn_norm=True,
          use_post_ffw_norm=True, final_logit_softcap=30.0,
          attn_logits_soft_cap=50.0),
      'gemma, grouped-query (2 kv heads)': config(num_kv_heads=2),
  }
  cases = {}
  for name, c in configs.items():
    loss_fn, params = cj.from_nnx(tl.Transformer(c, rngs=nnx.Rngs(0)), loss)
    cases[name] = (loss_fn, params, _tokens(1))
  coupled = cj.from_nnx(tl.Transformer(config(), rngs=nnx.Rngs(0)),
                        train_py_loss)
  return cases, coupled


def lm1b_cases():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  (models,) = _import('lm1b', 'models')
  cases = {}
  for learned in (False, True):
    config = models.TransformerConfig(
        vocab_size=VOCAB, output_vocab_size=VOCAB, emb_dim=64, num_heads=4,
        num_layers=2, qkv_dim=64, mlp_dim=128, max_len=FLAGS.length,
        deterministic=True,
        posemb_init=nn.initializers.normal(0.02) if learned else None)
    model = models.TransformerLM(config)
    params = model.init(jax.random.key(0),
                        jnp.ones((1, FLAGS.length), jnp.int32))['params']

    def loss_fn(p, batch, model=model):  # as lm1b's train.py shifts targets
      inputs = batch['tokens']
      targets = jnp.concatenate([inputs[:, 1:], 0 * inputs[:, :1]], 1)
      return _per_example_nll(model.apply({'params': p}, inputs), targets)

    name = 'lm1b TransformerLM' + (', learned positions' if learned else '')
    cases[name] = (loss_fn, params, _tokens())
  return cases


def imagenet_cases():
  (models,) = _import('imagenet', 'models')
  model = models.ResNet18(num_classes=10)
  variables = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)),
                         train=False)

  def loss_fn(p, batch):
    logits = model.apply({'params': p,
                          'batch_stats': variables['batch_stats']},
                         batch['x'], train=False)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, batch['y'][:, None], -1)[:, 0]

  batch = {'x': jax.random.normal(jax.random.key(1),
                                  (FLAGS.batch, 32, 32, 3)),
           'y': jnp.arange(FLAGS.batch) % 10}
  return {'imagenet ResNet18, 32x32': (loss_fn, variables['params'], batch)}


def measure(name, loss_fn, params, batch):
  paths = cj.norm_paths(loss_fn, params, batch)
  times, _, coh = harness.alpha_against_plain(loss_fn, params, batch,
                                              FLAGS.reps)
  base = times['plain']['median_ms']
  ghost = sum(1 for w in paths.values() if w.startswith('ghost'))
  return [name, f'{ghost}/{len(paths)}', ', '.join(sorted(set(paths.values()))),
          f'{base:.1f}', f"{times['auto']['median_ms'] / base:.2f}x",
          f"{times['vmap']['median_ms'] / base:.2f}x",
          f"{coh['auto']:.6g} / {coh['vmap']:.6g}",
          f"{abs(coh['auto'] - coh['vmap']) / abs(coh['vmap']):.0e}"]


def main(argv):
  del argv
  gemma, (coupled_fn, coupled_params) = gemma_cases()
  rows = []
  for cases in (gemma, lm1b_cases(), imagenet_cases()):
    for name, case in cases.items():
      rows.append(measure(name, *case))
      print(rows[-1], flush=True)
  try:
    cj.coherence_stats(coupled_fn, coupled_params, _tokens(1))
    refused = 'ACCEPTED: the coupled loss was not caught'
  except ValueError as e:
    refused = f'refused: {str(e)[:90]}...'
  table = harness.markdown_table(
      ['model', 'leaves on ghost', 'ways (norm_paths)', 'plain ms',
       'auto time', 'vmap time', 'm-coherence auto / vmap', 'relative diff'],
      rows)
  print(table)
  print("gemma's train.py loss (normalized by the batch's token count):",
        refused)
  if FLAGS.out_md:
    with open(FLAGS.out_md, 'w') as f:
      f.write(f'# flax/examples models (B = {FLAGS.batch}, T = '
              f'{FLAGS.length}, {jax.devices()[0].platform})\n\n'
              '`python -m benchmarks.check_flax_examples '
              '--flax_examples=...`; ratios to the plain gradient of the mean '
              'loss, medians of round-robin rounds in one process.\n\n'
              + table + "\n\nGemma's `train.py` loss (normalized by the "
              f"batch's token count): {refused}\n")


if __name__ == '__main__':
  app.run(main)
