"""Decoder-only GPT-style transformer, and the pre-LayerNorm block it shares with ViT.

Only layers that per-example ghost norms cover are used: nnx.Embed (token and
position embeddings, and `Embed.attend` for a tied output head), nnx.LayerNorm,
nnx.MultiHeadAttention (built from nnx.LinearGeneral) and nnx.Linear.

Parameter count (d = d_model, h = mlp_ratio·d, V = vocab_size, L = num_layers):
  block        4d² + 4d (attention: q, k, v, out kernels and biases)
               + 2dh + h + d (MLP) + 4d (two LayerNorms)
  Transformer  (V + max_len)·d + L·block + 2d (final LayerNorm)
               + V·d if the head is untied (an nnx.Linear without bias).

Example (shapes only; `nnx.eval_shape` allocates nothing):
  >>> gpt = nnx.eval_shape(lambda: Transformer(
  ...     vocab_size=512, d_model=256, num_heads=4, num_layers=6, max_len=128,
  ...     rngs=nnx.Rngs(0)))
  >>> sum(p.size for p in jax.tree.leaves(nnx.state(gpt, nnx.Param)))
  4902912
  >>> param_count(512, 256, 6, 128)
  4902912
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax import _checks


def param_count(vocab_size: int, d_model: int, num_layers: int, max_len: int,
                mlp_ratio: int = 4, tie_embeddings: bool = True) -> int:
  """The number of parameters of `Transformer(...)` with these sizes.

  Args:
    vocab_size: tokens in the vocabulary (V).
    d_model: the residual width (d).
    num_layers: transformer blocks (L).
    max_len: positions of the position embedding.
    mlp_ratio: hidden width of the MLP per d_model.
    tie_embeddings: False adds the V·d kernel of the output head.

  Returns:
    (V + max_len)·d + L·block_param_count(d, mlp_ratio) + 2d [+ V·d].

  Example:
    >>> param_count(10, 8, 1, 4, tie_embeddings=False) - param_count(10, 8, 1, 4)
    80
  """
  d = d_model
  head = 0 if tie_embeddings else vocab_size * d
  return ((vocab_size + max_len) * d + num_layers * block_param_count(
      d, mlp_ratio) + 2 * d + head)


def block_param_count(d_model: int, mlp_ratio: int = 4) -> int:
  """Parameters of one `TransformerBlock`: 4d² + 4d + 2dh + h + d + 4d, h = mlp_ratio·d.

  Example:
    >>> block_param_count(8, 4)   # 4·64 + 32 + 2·8·32 + 32 + 8 + 32
    872
  """
  d, h = d_model, mlp_ratio * d_model
  return 4 * d * d + 4 * d + 2 * d * h + h + d + 4 * d


def causal_mask(length: int) -> jax.Array:
  """Boolean [1, 1, length, length] mask: query t attends to keys 0..t.

  Example:
    >>> causal_mask(3)[0, 0].astype(int)
    Array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]], dtype=int32)
  """
  return jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm block: x + Attention(LN(x)), then x + MLP(LN(x)) (GELU).

  Shared by `Transformer` (with a causal mask) and `ViT` (without).

  Args:
    d_model: the residual width (in and out features).
    num_heads: attention heads (must divide d_model).
    mlp_ratio: the MLP's hidden width per d_model.
    dtype: computation dtype (e.g. jnp.bfloat16); None: from the inputs.
    param_dtype: parameter dtype.
    rngs: the `nnx.Rngs` for the initializers.

  Raises:
    ValueError: num_heads does not divide d_model, or a size is not positive.

  Example (shapes only):
    >>> jax.eval_shape(
    ...     lambda x: TransformerBlock(16, 4, rngs=nnx.Rngs(0))(x, causal_mask(5)),
    ...     jax.ShapeDtypeStruct((2, 5, 16), jnp.float32)).shape
    (2, 5, 16)
  """

  def __init__(self, d_model: int, num_heads: int, mlp_ratio: int = 4, *,
               dtype: Optional[Any] = None, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    _check_positive(d_model=d_model, num_heads=num_heads, mlp_ratio=mlp_ratio)
    _check_heads(d_model, num_heads)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_norm = nnx.LayerNorm(d_model, **kw)
    # No dropout, no cache: deterministic full-sequence attention, and no
    # RNG state stored in the module.
    self.attn = nnx.MultiHeadAttention(num_heads, d_model, decode=False,
                                       keep_rngs=False, **kw)
    self.mlp_norm = nnx.LayerNorm(d_model, **kw)
    self.mlp_in = nnx.Linear(d_model, mlp_ratio * d_model, **kw)
    self.mlp_out = nnx.Linear(mlp_ratio * d_model, d_model, **kw)

  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None
               ) -> jax.Array:
    """[B, T, d_model] -> [B, T, d_model]; `mask` broadcasts to [B, heads, T, T]."""
    x = x + self.attn(self.attn_norm(x), mask=mask, decode=False)
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))


class Transformer(nnx.Module):
  """Decoder-only GPT-style language model: tokens [B, T] -> logits [B, T, V].

  Token + learned position embeddings (nnx.Embed), `num_layers` pre-LN blocks
  with causal multi-head attention and a GELU MLP, a final LayerNorm, and an
  output head that is either the token embedding itself (`Embed.attend`,
  `tie_embeddings=True`) or an nnx.Linear without bias. Parameter count:
  `param_count(...)` (see the module docstring).

  Args:
    vocab_size: tokens in the vocabulary (V).
    d_model: the residual width.
    num_heads: attention heads (must divide d_model).
    num_layers: transformer blocks.
    max_len: the longest sequence (positions of the position embedding).
    mlp_ratio: the MLP's hidden width per d_model.
    tie_embeddings: True: logits = h · embeddingᵀ; False: a separate head.
    dtype: computation dtype (e.g. jnp.bfloat16; logits come out in it).
    param_dtype: parameter dtype.
    rngs: the `nnx.Rngs` for the initializers.

  Raises:
    ValueError: a size that is not positive, or num_heads not dividing d_model.

  Example (shapes only; `jax.eval_shape` computes nothing):
    >>> gpt = lambda tokens: Transformer(
    ...     vocab_size=11, d_model=16, num_heads=2, num_layers=1, max_len=8,
    ...     rngs=nnx.Rngs(0))(tokens)
    >>> jax.eval_shape(gpt, jax.ShapeDtypeStruct((3, 5), jnp.int32)).shape
    (3, 5, 11)
    >>> jax.eval_shape(gpt, jax.ShapeDtypeStruct((3, 9), jnp.int32))
    Traceback (most recent call last):
    ValueError: tokens: got shape (3, 9); pass int tokens [batch, length] ...
  """

  def __init__(self, vocab_size: int, d_model: int, num_heads: int,
               num_layers: int, max_len: int, mlp_ratio: int = 4,
               tie_embeddings: bool = True, dtype: Optional[Any] = jnp.float32,
               param_dtype: Any = jnp.float32, *, rngs: nnx.Rngs):
    _check_positive(vocab_size=vocab_size, d_model=d_model,
                    num_layers=num_layers, max_len=max_len)
    _check_heads(d_model, num_heads)  # before any parameter is initialized
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.max_len = max_len
    self.tie_embeddings = tie_embeddings
    self.embed = nnx.Embed(vocab_size, d_model, **kw)
    self.pos_embed = nnx.Embed(max_len, d_model, **kw)
    self.blocks = nnx.List([
        TransformerBlock(d_model, num_heads, mlp_ratio, **kw)
        for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(d_model, **kw)
    self.head = (None if tie_embeddings else
                 nnx.Linear(d_model, vocab_size, use_bias=False, **kw))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits [B, T, vocab_size] of int tokens [B, T] (T <= max_len).

    Position t's logits depend only on tokens 0..t (causal attention).
    """
    if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
      raise ValueError(f'tokens: got shape {tokens.shape}; pass int tokens '
                       f'[batch, length] with length <= max_len='
                       f'{self.max_len}.')
    length = tokens.shape[1]
    # Positions broadcast over the batch: every example looks its rows up
    # itself, so per-example gradients (and ghost norms) see them.
    positions = jnp.broadcast_to(jnp.arange(length), tokens.shape)
    x = self.embed(tokens) + self.pos_embed(positions)
    mask = causal_mask(length)
    for block in self.blocks:
      x = block(x, mask=mask)
    x = self.final_norm(x)
    return self.embed.attend(x) if self.head is None else self.head(x)


def _check_heads(d_model: int, num_heads: int) -> None:
  _check_positive(num_heads=num_heads)
  if d_model % num_heads:
    raise ValueError(f'num_heads: got {num_heads}, which does not divide '
                     f'd_model={d_model}; pick a divisor of d_model.')


def _check_positive(**sizes: int) -> None:
  for name, value in sizes.items():
    if not _checks.is_int(value) or value < 1:
      raise ValueError(f'{name}: got {value!r}; pass a positive integer.')
