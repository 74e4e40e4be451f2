"""PyTorch side of the sequence benchmark: GPT-style and ViT twins, α five ways.

Needs CPU torch 2.13.0, opacus 1.6.0 and backpack-for-pytorch 1.7.1 (the
`bench` extra). Used by `bench_sequence`, whose SIZES are the benchmark's
model sizes. The models are twins of
`coherence_jax.models.transformer.Transformer` (tied embeddings) and
`coherence_jax.models.vit.ViT`: same layers, same parameter counts, and
`gpt_from_jax` / `vit_from_jax` copy the JAX params so that logits and α can
be compared on identical weights. Attention is written out with nn.Linear
query/key/value/out projections (the kernels of nnx.MultiHeadAttention's
LinearGeneral layers, flattened over heads), so that Opacus and BackPACK see
only the layer types they know: Linear, Embedding, LayerNorm, Conv2d.

Methods (per-example gradient g_i of the per-example loss ℓ_i — next-token
cross-entropy averaged over positions for the GPT, cross-entropy for the ViT;
α = ‖Σ g_i‖² / (B Σ ‖g_i‖²)):
  plain        mean loss, `.backward()`.
  vmap         torch.func.vmap(grad) over examples, then S and Q.
  opacus ghost GradSampleModuleFastGradientClipping(use_ghost_clipping=True):
               one backward of Σ ℓ_i gives S = p.grad and per-example norms
               (ghost norms for Linear/Embedding, per-layer per-example
               gradients for the rest), Q = Σ_i Σ_p norm².
  opacus fgc   the same with use_ghost_clipping=False ("fast gradient
               clipping": per-layer per-example gradients, then norms).
  backpack     extend(model), BatchL2Grad: Q = Σ_params batch_l2, S = p.grad.
A method that cannot handle a model raises `Unsupported` with the reason.

Example:
  >>> sizes = dict(num_classes=10, image_size=28, patch_size=7, d_model=16,
  ...              num_heads=2, num_layers=1)
  >>> model, x, y = problem('vit', 4, sizes)
  >>> alpha = make_case('torch alpha vmap (torch.func)', 'vit', model, x, y)()
"""

import copy
import math
import os
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

warnings.filterwarnings('ignore')

TORCH_METHODS = ('torch plain grad', 'torch alpha vmap (torch.func)',
                 'torch alpha opacus ghost clipping',
                 'torch alpha opacus fast gradient clipping',
                 'torch alpha backpack')
LN_EPS = 1e-6  # nnx.LayerNorm's default epsilon (torch's is 1e-5)


class Unsupported(Exception):
  """A method that cannot handle a model (reported as such in the table)."""


# ----------------------------------------------------------------- models ----

class Attention(nn.Module):
  """nnx.MultiHeadAttention without dropout: q, k, v, out as nn.Linear."""

  def __init__(self, d_model, num_heads):
    super().__init__()
    self.num_heads = num_heads
    self.query = nn.Linear(d_model, d_model)
    self.key = nn.Linear(d_model, d_model)
    self.value = nn.Linear(d_model, d_model)
    self.out = nn.Linear(d_model, d_model)

  def forward(self, x, causal: bool):
    b, t, d = x.shape
    heads = lambda z: z.reshape(b, t, self.num_heads, -1).transpose(1, 2)
    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    # As flax's dot_product_attention_weights: q / sqrt(depth), masked logits
    # set to the dtype's min, softmax over keys.
    logits = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)
    if causal:
      keep = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
      logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    y = torch.softmax(logits, dim=-1) @ v                  # [b, heads, t, hd]
    return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
  """Pre-LayerNorm block of coherence_jax.models.transformer.TransformerBlock."""

  def __init__(self, d_model, num_heads, mlp_ratio, causal):
    super().__init__()
    self.causal = causal
    self.attn_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.attn = Attention(d_model, num_heads)
    self.mlp_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.mlp_in = nn.Linear(d_model, mlp_ratio * d_model)
    self.gelu = nn.GELU(approximate='tanh')  # jax.nn.gelu's default
    self.mlp_out = nn.Linear(mlp_ratio * d_model, d_model)

  def forward(self, x):
    x = x + self.attn(self.attn_norm(x), self.causal)
    return x + self.mlp_out(self.gelu(self.mlp_in(self.mlp_norm(x))))


class GPT(nn.Module):
  """Twin of Transformer(tie_embeddings=True): tokens [B, T] -> logits [B, T, V].

  The head is an nn.Linear without bias whose weight IS the token embedding
  (the usual torch weight tying), i.e. one parameter used twice.
  """

  def __init__(self, vocab_size, d_model, num_heads, num_layers, max_len,
               mlp_ratio=4):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, d_model)
    self.pos_embed = nn.Embedding(max_len, d_model)
    self.blocks = nn.ModuleList([Block(d_model, num_heads, mlp_ratio, True)
                                 for _ in range(num_layers)])
    self.final_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.head = nn.Linear(d_model, vocab_size, bias=False)
    self.head.weight = self.embed.weight

  def forward(self, tokens):
    # [B, T] positions, as in the JAX model: every example looks its rows up
    # (contiguous: Opacus' embedding ghost norm `view`s the indices).
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    positions = positions.expand_as(tokens).contiguous()
    x = self.embed(tokens) + self.pos_embed(positions)
    for block in self.blocks:
      x = block(x)
    return self.head(self.final_norm(x))


class ViT(nn.Module):
  """Twin of coherence_jax.models.vit.ViT(pool='cls') on NCHW images."""

  def __init__(self, num_classes, image_size, patch_size, d_model, num_heads,
               num_layers, mlp_ratio=4, in_channels=1):
    super().__init__()
    patches = (image_size // patch_size) ** 2
    self.patch_embed = nn.Conv2d(in_channels, d_model, patch_size,
                                 stride=patch_size)
    self.cls_token = nn.Embedding(1, d_model)
    self.pos_embed = nn.Embedding(patches + 1, d_model)
    self.blocks = nn.ModuleList([Block(d_model, num_heads, mlp_ratio, False)
                                 for _ in range(num_layers)])
    self.final_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.head = nn.Linear(d_model, num_classes)

  def forward(self, images):
    x = self.patch_embed(images).flatten(2).transpose(1, 2)   # [B, N, d]
    b = x.shape[0]
    zeros = torch.zeros(b, 1, dtype=torch.long, device=x.device)
    x = torch.cat([self.cls_token(zeros), x], dim=1)
    positions = torch.arange(x.shape[1], device=x.device).expand(
        b, -1).contiguous()
    x = x + self.pos_embed(positions)
    for block in self.blocks:
      x = block(x)
    return self.head(self.final_norm(x)[:, 0])


def num_params(model: nn.Module) -> int:
  """Distinct parameters (a tied weight counts once)."""
  return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------- weights from JAX ----

def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32))


def _block_state(prefix, p):
  """JAX TransformerBlock params -> torch Block state dict entries."""
  sd = {}
  for norm in ('attn_norm', 'mlp_norm'):
    sd[f'{prefix}.{norm}.weight'] = _t(p[norm]['scale'])
    sd[f'{prefix}.{norm}.bias'] = _t(p[norm]['bias'])
  for name in ('query', 'key', 'value'):       # kernel [d, heads, hd]
    k = np.asarray(p['attn'][name]['kernel'])
    sd[f'{prefix}.attn.{name}.weight'] = _t(k.reshape(k.shape[0], -1).T)
    sd[f'{prefix}.attn.{name}.bias'] = _t(
        np.asarray(p['attn'][name]['bias']).reshape(-1))
  k = np.asarray(p['attn']['out']['kernel'])    # [heads, hd, d]
  sd[f'{prefix}.attn.out.weight'] = _t(k.reshape(-1, k.shape[-1]).T)
  sd[f'{prefix}.attn.out.bias'] = _t(p['attn']['out']['bias'])
  for name in ('mlp_in', 'mlp_out'):
    sd[f'{prefix}.{name}.weight'] = _t(np.asarray(p[name]['kernel']).T)
    sd[f'{prefix}.{name}.bias'] = _t(p[name]['bias'])
  return sd


def _load(model, sd):
  missing, unexpected = model.load_state_dict(
      {k: v.contiguous() for k, v in sd.items()}, strict=False)
  # The tied head's weight is the embedding (same tensor), not a separate one.
  missing = [k for k in missing if k != 'head.weight']
  if missing or unexpected:
    raise ValueError(f'params: missing {missing}, unexpected {unexpected}.')
  return model


def gpt_from_jax(params, sizes) -> GPT:
  """A torch GPT holding the weights of a JAX `Transformer`'s from_nnx params.

  Args:
    params: the `from_nnx` params of `Transformer(**sizes, tie_embeddings=True)`.
    sizes: the Transformer's keyword sizes (vocab_size, d_model, ...).

  Returns:
    The torch twin with the same weights (q/k/v kernels [d, heads, hd] ->
    Linear weights [heads·hd, d]; out [heads, hd, d] -> [d, heads·hd]).
  """
  model = GPT(**sizes)
  sd = {'embed.weight': _t(params['embed']['embedding']),
        'pos_embed.weight': _t(params['pos_embed']['embedding']),
        'final_norm.weight': _t(params['final_norm']['scale']),
        'final_norm.bias': _t(params['final_norm']['bias'])}
  for i in range(sizes['num_layers']):
    sd.update(_block_state(f'blocks.{i}', params['blocks'][i]))
  return _load(model, sd)


def vit_from_jax(params, sizes) -> ViT:
  """A torch ViT holding the weights of a JAX `ViT(pool='cls')`'s params.

  The patch kernel HWIO -> OIHW; the NCHW conv output flattened over (h, w)
  gives the patches in the order of the NHWC reshape. `sizes`: the ViT's
  keyword sizes (num_classes, image_size, patch_size, d_model, ...).
  """
  model = ViT(**sizes)
  sd = {'patch_embed.weight': _t(params['patch_embed']['kernel']).permute(
            3, 2, 0, 1),
        'patch_embed.bias': _t(params['patch_embed']['bias']),
        'cls_token.weight': _t(params['cls_token']['embedding']),
        'pos_embed.weight': _t(params['pos_embed']['embedding']),
        'final_norm.weight': _t(params['final_norm']['scale']),
        'final_norm.bias': _t(params['final_norm']['bias']),
        'head.weight': _t(np.asarray(params['head']['kernel']).T),
        'head.bias': _t(params['head']['bias'])}
  for i in range(sizes['num_layers']):
    sd.update(_block_state(f'blocks.{i}', params['blocks'][i]))
  return _load(model, sd)


def images_nchw(images_nhwc) -> torch.Tensor:
  """NHWC numpy/JAX images -> an NCHW tensor with standard strides.

  A C=1 tensor from `permute` has strides (HW, 1, W, 1), which torch takes as
  channels_last; Opacus 1.6.0 then computed a conv grad_sample of zeros
  (README_side_by_side.md). Copying gives the standard layout.
  """
  src = torch.from_numpy(np.asarray(images_nhwc, np.float32)).permute(
      0, 3, 1, 2)
  out = torch.empty(src.shape)
  out.copy_(src)
  return out


# --------------------------------------------------------------- problems ----

DEVICE = os.environ.get('BENCH_TORCH_DEVICE', 'cpu')  # gpu.sh: cuda


def sync():
  if DEVICE.startswith('cuda'):
    torch.cuda.synchronize()


def problem(model_name: str, batch_size: int, sizes, seed: int = 0):
  """(model, x, y) with torch's own seeded init and random data.

  `sizes`: the model's keyword sizes (bench_sequence.SIZES[model_name]).

  gpt: x = tokens [B, T] (T = max_len), y = the next tokens [B, T].
  vit: x = images [B, 1, 28, 28] in [0, 1), y = labels [B].
  """
  torch.manual_seed(seed)
  if model_name == 'gpt':
    model = GPT(**sizes)
    tokens = torch.randint(0, sizes['vocab_size'],
                           (batch_size, sizes['max_len'] + 1))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
  elif model_name == 'vit':
    model = ViT(**sizes)
    side = sizes['image_size']
    x = torch.rand(batch_size, 1, side, side)
    y = torch.randint(0, sizes['num_classes'], (batch_size,))
  else:
    raise ValueError(f"model_name: got {model_name!r}; pass 'gpt' or 'vit'.")
  return model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)


def summed_loss(model_name, logits, y):
  """Σ_i ℓ_i: per-example loss is the mean over positions for the GPT."""
  if model_name == 'gpt':
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
        reduction='sum') / y.shape[1]
  return nn.functional.cross_entropy(logits, y, reduction='sum')


# ---------------------------------------------------------------- methods ----

def plain_fn(model_name, model, x, y):
  def run():
    model.zero_grad(set_to_none=True)
    (summed_loss(model_name, model(x), y) / x.shape[0]).backward()
    return next(model.parameters()).grad
  return run


def vmap_stats(model_name, model, x, y):
  """(‖S‖², Q) from torch.func per-example gradients (tied params once)."""
  from torch.func import functional_call, grad, vmap  # pylint: disable=g-import-not-at-top
  params = {k: v.detach() for k, v in model.named_parameters()}
  def loss_one(p, xi, yi):
    out = functional_call(model, p, (xi.unsqueeze(0),))
    return summed_loss(model_name, out, yi.unsqueeze(0))
  g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
  s_sq = sum((v.sum(0) ** 2).sum() for v in g.values())
  q = sum((v ** 2).sum() for v in g.values())
  return s_sq, q


def vmap_fn(model_name, model, x, y):
  def run():
    s_sq, q = vmap_stats(model_name, model, x, y)
    return s_sq / (x.shape[0] * q)
  return run


def opacus_module(model, use_ghost_clipping: bool):
  """GradSampleModuleFastGradientClipping (sum reduction), or Unsupported."""
  from opacus.grad_sample import GradSampleModuleFastGradientClipping  # pylint: disable=g-import-not-at-top
  return GradSampleModuleFastGradientClipping(
      model, loss_reduction='sum', use_ghost_clipping=use_ghost_clipping)


def opacus_stats(model_name, gsm, x, y):
  """(‖S‖², Q): one backward of Σ ℓ_i fills p.grad and p._norm_sample."""
  gsm.zero_grad(set_to_none=True)
  try:
    logits = gsm(x)
  except NotImplementedError as e:  # e.g. ghost clipping with tied weights
    raise Unsupported(f'opacus 1.6.0: {e}') from e
  summed_loss(model_name, logits, y).backward()
  params = [p for p in gsm.parameters() if p.requires_grad]
  s_sq = sum((p.grad ** 2).sum() for p in params)
  q = (gsm.get_norm_sample() ** 2).sum()
  return s_sq, q


def opacus_fn(use_ghost_clipping):
  def make(model_name, model, x, y):
    gsm = opacus_module(model, use_ghost_clipping)
    def run():
      s_sq, q = opacus_stats(model_name, gsm, x, y)
      return s_sq / (x.shape[0] * q)
    return run
  return make


def backpack_stats(model_name, ext_model, x, y):
  """(‖S‖², Q) from BackPACK BatchL2Grad; Unsupported if a param lacks batch_l2."""
  from backpack import backpack  # pylint: disable=g-import-not-at-top
  from backpack.extensions import BatchL2Grad  # pylint: disable=g-import-not-at-top
  ext_model.zero_grad(set_to_none=True)
  for p in ext_model.parameters():
    if hasattr(p, 'batch_l2'):
      del p.batch_l2
  try:
    with backpack(BatchL2Grad()):
      summed_loss(model_name, ext_model(x), y).backward()
  except NotImplementedError as e:
    raise Unsupported(f'backpack 1.7.1: {str(e)[:160]}') from e
  missing = sorted({type(m).__name__ for m in ext_model.modules()
                    for p in m.parameters(recurse=False)
                    if not hasattr(p, 'batch_l2')})
  if missing:
    raise Unsupported('backpack 1.7.1 BatchL2Grad has no extension for '
                      + ', '.join(missing) + ' (their params get no batch_l2)')
  s_sq = sum((p.grad ** 2).sum() for p in ext_model.parameters())
  q = sum(p.batch_l2.sum() for p in ext_model.parameters())
  return s_sq, q


def backpack_extend(model):
  from backpack import extend  # pylint: disable=g-import-not-at-top
  return extend(model)


def backpack_fn(model_name, model, x, y):
  if model_name == 'gpt':
    # A tied weight gets batch_l2 from each of its two modules, and BackPACK
    # keeps one of them: ‖g_lookup + g_head‖² is not formed (no cross term).
    tied = 'tied embedding/head weight (BackPACK keeps one module\'s batch_l2)'
  else:
    tied = None
  ext_model = backpack_extend(model)
  def run():
    s_sq, q = backpack_stats(model_name, ext_model, x, y)
    if tied:
      raise Unsupported(f'backpack 1.7.1: {tied}')
    return s_sq / (x.shape[0] * q)
  return run


def make_case(name: str, model_name: str, model, x, y
              ) -> Callable[[], torch.Tensor]:
  """A runner of one method on a fresh copy of the model (hooks modify it)."""
  model = copy.deepcopy(model)
  fn = {'torch plain grad': plain_fn,
        'torch alpha vmap (torch.func)': vmap_fn,
        'torch alpha opacus ghost clipping': opacus_fn(True),
        'torch alpha opacus fast gradient clipping': opacus_fn(False),
        'torch alpha backpack': backpack_fn}[name](model_name, model, x, y)
  def synced():
    out = fn()
    sync()
    return out
  return synced
