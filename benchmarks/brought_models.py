"""Models written the way researchers bring them, in the project's own code.

Layouts of flax's own examples and the usual LLM code that the ghost rules
had to learn (benchmarks/bench_brought.py times them; tests/
test_ghost_brought.py checks them against vmap):
  GemmaLM         Gemma-style blocks: `ScaledEmbed` (an nnx.Embed subclass
                  that scales in its own __call__), its own `GemmaRMSNorm`
                  class, fused qkv 'BTD,SNDH->SBTNH' or grouped-query kv
                  'BTD,CKDH->CBTKH', gated MLP, tied output head;
  PositionTableLM GPT-style with a raw `nnx.Param` position table read in
                  the root module;
  ScanLM          pre-LN blocks created with nnx.vmap and applied with
                  nnx.scan ("scan over layers"), optionally each under
                  nnx.remat, or in a Python loop of nnx.remat calls;
  LinenLM         a linen Transformer LM (flax/examples/lm1b's layout);
  LinenResNet     a linen ResNet (flax/examples/imagenet's blocks) with
                  GroupNorm or inference-mode BatchNorm.

Example:
  >>> model = GemmaLM(vocab=13, dim=8, heads=2, kv_heads=1, layers=1)
  >>> model(jnp.ones((2, 5), jnp.int32)).shape
  (2, 5, 13)
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class GemmaRMSNorm(nnx.Module):
  """Gemma's RMSNorm: a class of its own, scale used as (1 + scale)."""

  def __init__(self, dim):
    self.scale = nnx.Param(jnp.linspace(-0.2, 0.3, dim))

  def __call__(self, x):
    var = jnp.mean(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + 1e-6) * (1 + self.scale[...])


def gemma_rms_sq_norms(module, params, x, dz):
  """A ghost rule for GemmaRMSNorm: ‖Σ_t δ_t ⊙ x̂_t‖² per example."""
  del module, params
  normed = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
  g = (dz * normed).reshape(x.shape[0], -1, x.shape[-1]).sum(1)
  return {'scale': (g * g).sum(-1)}


class ScaledEmbed(nnx.Embed):
  """Gemma's embedder: the lookup times √features, in its own __call__."""

  def __call__(self, inputs):
    return super().__call__(inputs) * jnp.sqrt(float(self.features))


class GemmaBlock(nnx.Module):
  """Pre-norm attention (fused or grouped-query) and a gated MLP."""

  def __init__(self, dim, heads, kv_heads, head_dim, rngs):
    self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
    self.attn_norm = GemmaRMSNorm(dim)
    if kv_heads == heads:
      self.qkv = nnx.Einsum('BTD,SNDH->SBTNH', (3, heads, dim, head_dim),
                            rngs=rngs)
    else:
      self.q = nnx.Einsum('BTD,NDH->BTNH', (heads, dim, head_dim), rngs=rngs)
      self.kv = nnx.Einsum('BTD,CKDH->CBTKH', (2, kv_heads, dim, head_dim),
                           rngs=rngs)
    self.attn_out = nnx.Einsum('BTNH,NHD->BTD', (heads, head_dim, dim),
                               rngs=rngs)
    self.mlp_norm = GemmaRMSNorm(dim)
    self.gate = nnx.Einsum('BTD,GDF->GBTF', (2, dim, 2 * dim), rngs=rngs)
    self.down = nnx.Linear(2 * dim, dim, use_bias=False, rngs=rngs)

  def __call__(self, x):
    h = self.attn_norm(x)
    if self.kv_heads == self.heads:
      q, k, v = self.qkv(h)
    else:
      q = self.q(h)
      k, v = self.kv(h)
      rep = self.heads // self.kv_heads
      k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k) / jnp.sqrt(self.head_dim)
    mask = jnp.tril(jnp.ones((x.shape[1],) * 2, bool))
    att = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1)
    x = x + self.attn_out(jnp.einsum('bnts,bsnh->btnh', att, v))
    gate, up = self.gate(self.mlp_norm(x))
    return x + self.down(jax.nn.gelu(gate) * up)


class GemmaLM(nnx.Module):
  """Gemma-style LM: scaled embedding, blocks in a Python loop, tied head."""

  def __init__(self, vocab=13, dim=8, heads=2, kv_heads=2, head_dim=4,
               layers=1, seed=0):
    rngs = nnx.Rngs(seed)
    self.embed = ScaledEmbed(vocab, dim, rngs=rngs)
    self.blocks = nnx.List([GemmaBlock(dim, heads, kv_heads, head_dim, rngs)
                            for _ in range(layers)])
    self.final_norm = GemmaRMSNorm(dim)

  def __call__(self, tokens):
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x)
    return self.embed.attend(self.final_norm(x))


class PositionTableLM(nnx.Module):
  """GPT-style: a raw nnx.Param position table added in the root module."""

  def __init__(self, vocab=13, dim=8, length=16, seed=0):
    rngs = nnx.Rngs(seed)
    self.embed = nnx.Embed(vocab, dim, rngs=rngs)
    self.position = nnx.Param(0.1 * jnp.ones((length, dim)))
    self.mlp = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens) + self.position[...][:tokens.shape[1]]
    return self.embed.attend(jnp.tanh(self.mlp(x)))


class ScanBlock(nnx.Module):
  """Pre-LN block: LayerNorm, attention-free token mixing by a Linear."""

  def __init__(self, dim, rngs):
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.up = nnx.Linear(dim, 2 * dim, rngs=rngs)
    self.down = nnx.Linear(2 * dim, dim, rngs=rngs)

  def __call__(self, x):
    return x + self.down(jax.nn.gelu(self.up(self.norm(x))))


class ScanLM(nnx.Module):
  """Blocks stacked over a layer axis: 'scan', 'scan_remat' or 'remat_loop'.

  Example:
    >>> ScanLM(layers=2, mode='scan_remat').blocks.up.kernel.shape
    (2, 8, 16)
  """

  def __init__(self, vocab=13, dim=8, layers=2, mode='scan', seed=0):
    rngs = nnx.Rngs(seed)
    self.mode = mode
    self.embed = nnx.Embed(vocab, dim, rngs=rngs)

    @nnx.split_rngs(splits=layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return ScanBlock(dim, rngs)

    if mode == 'remat_loop':
      self.blocks = nnx.List([ScanBlock(dim, rngs) for _ in range(layers)])
    else:
      self.blocks = make(rngs)
    self.final_norm = nnx.LayerNorm(dim, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens)
    apply = lambda block, x: block(x)
    if self.mode == 'remat_loop':
      for block in self.blocks:
        x = nnx.remat(apply)(block, x)
    else:
      body = nnx.remat(apply) if self.mode == 'scan_remat' else apply

      @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
      def run(x, block):
        return body(block, x)

      x = run(x, self.blocks)
    return self.embed.attend(self.final_norm(x))


def next_token_logp(model, batch):
  """(log p of each next token [B, T], mask of non-pad (nonzero) targets)."""
  tokens = batch['tokens']
  logits = model(tokens[:, :-1])
  target = tokens[:, 1:]
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None],
                             -1)[..., 0]
  return logp, target != 0


def lm_loss(model, batch):
  """Per-example next-token loss, each example normalized by its own count
  of non-pad (nonzero) targets."""
  logp, keep = next_token_logp(model, batch)
  return -jnp.sum(logp * keep, -1) / jnp.maximum(jnp.sum(keep, -1), 1)


def linen_lm_loss(model):
  """`loss_fn(params, batch)` of a linen LM through `model.apply`."""
  return lambda p, batch: lm_loss(
      lambda tokens: model.apply({'params': p}, tokens), batch)


def linen_classifier_loss(model, others=None):
  """`loss_fn(params, batch)`: cross-entropy of a linen classifier applied
  with `model.apply({'params': params, **others}, batch['x'])`."""
  def loss_fn(p, batch):
    logits = model.apply({'params': p, **(others or {})}, batch['x'])
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, batch['y'][:, None], -1)[:, 0]
  return loss_fn


# ------------------------------------------------------------------- linen
class LinenBlock(nn.Module):
  """lm1b-style decoder block: pre-LN causal self-attention and MLP."""
  dim: int
  heads: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    h = nn.MultiHeadDotProductAttention(num_heads=self.heads,
                                        deterministic=True)(h, h, mask=mask)
    x = x + h
    h = nn.Dense(4 * self.dim)(nn.LayerNorm()(x))
    return x + nn.Dense(self.dim)(nn.gelu(h))


class LinenLM(nn.Module):
  """A linen Transformer LM in the layout of flax/examples/lm1b: token and
  learned position embeddings (looked up per example), blocks, a Dense head.

  Example:
    >>> model = LinenLM(vocab=13, dim=8, heads=2, layers=1)
    >>> p = model.init(jax.random.key(0), jnp.ones((1, 5), jnp.int32))
    >>> model.apply(p, jnp.ones((2, 5), jnp.int32)).shape
    (2, 5, 13)
  """
  vocab: int = 13
  dim: int = 8
  heads: int = 2
  layers: int = 1
  length: int = 64

  @nn.compact
  def __call__(self, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = nn.Embed(self.vocab, self.dim)(tokens)
    x = x + nn.Embed(self.length, self.dim)(positions)
    for _ in range(self.layers):
      x = LinenBlock(self.dim, self.heads)(x)
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


class LinenResidual(nn.Module):
  """ResNet basic block (flax/examples/imagenet layout), norm chosen."""
  filters: int
  strides: int = 1
  norm: str = 'group'

  def normalize(self, x):
    if self.norm == 'batch':
      return nn.BatchNorm(use_running_average=True)(x)
    return nn.GroupNorm(num_groups=2)(x)

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(self.normalize(y))
    y = self.normalize(nn.Conv(self.filters, (3, 3), use_bias=False)(y))
    if x.shape != y.shape:
      x = self.normalize(nn.Conv(self.filters, (1, 1), self.strides,
                                 use_bias=False)(x))
    return nn.relu(x + y)


class LinenResNet(nn.Module):
  """A small linen ResNet (imagenet example layout) on 32x32 images.

  Example:
    >>> model = LinenResNet(widths=(4, 8), classes=3)
    >>> v = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> model.apply(v, jnp.ones((2, 8, 8, 3))).shape
    (2, 3)
  """
  widths: tuple = (8, 16)
  classes: int = 10
  norm: str = 'group'

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False)(x)
    for i, width in enumerate(self.widths):
      x = LinenResidual(width, 2 if i else 1, self.norm)(x)
    return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))
