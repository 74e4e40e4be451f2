"""Vision transformer (ViT) patch classifier for NHWC images, e.g. 28x28x1.

Patches of `patch_size`² pixels are embedded by an nnx.Conv with stride equal
to its kernel, a learned position embedding (nnx.Embed) is added, and the
pre-LayerNorm `TransformerBlock`s of the GPT-style `Transformer` (without a
mask) follow; a final LayerNorm and an nnx.Linear head classify either the
CLS token or the mean of the patch tokens. The CLS token is the single row of
an nnx.Embed looked up once per example, so that, like every other layer
here, ghost norms cover it.

Parameter count (d = d_model, P = patch_size, C = in_channels, N = patches,
K = num_classes, one more position and the d-vector CLS row with pool='cls'):
  P²·C·d + d (patches) + (N + [1])·d (positions) + [d] (CLS)
  + L·block_param_count(d, mlp_ratio) + 2d (final LayerNorm) + d·K + K (head).

Example (shapes only):
  >>> vit = nnx.eval_shape(lambda: ViT(num_classes=10, rngs=nnx.Rngs(0)))
  >>> sum(p.size for p in jax.tree.leaves(nnx.state(vit, nnx.Param)))
  105098
"""

from typing import Any, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import nnx

from coherence_jax import _checks
from coherence_jax.models.transformer import TransformerBlock
from coherence_jax.models.transformer import block_param_count

POOLS = ('cls', 'mean')


def _pair(x: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
  pair = (x, x) if _checks.is_int(x) else tuple(x) if isinstance(
      x, (tuple, list)) else ()
  if len(pair) != 2 or not all(_checks.is_int(v) and v >= 1 for v in pair):
    raise ValueError(f'{name}: got {x!r}; pass a positive int or a pair '
                     '(height, width) of them.')
  return pair


def vit_param_count(num_classes: int, image_size=28, patch_size=7,
                    in_channels: int = 1, d_model: int = 64,
                    num_layers: int = 2, mlp_ratio: int = 4,
                    pool: str = 'cls') -> int:
  """The number of parameters of `ViT(...)` with these sizes.

  Example:
    >>> vit_param_count(10)
    105098
  """
  (h, w), (ph, pw) = _pair(image_size, 'image_size'), _pair(patch_size,
                                                           'patch_size')
  d, cls = d_model, int(pool == 'cls')
  patches = (h // ph) * (w // pw)
  return (ph * pw * in_channels * d + d + (patches + cls) * d + cls * d
          + num_layers * block_param_count(d, mlp_ratio) + 2 * d
          + d * num_classes + num_classes)


class ViT(nnx.Module):
  """Patch classifier: images [B, H, W, C] -> logits [B, num_classes].

  Args:
    num_classes: output logits.
    image_size: H = W, or (H, W); each must be a multiple of the patch size.
    patch_size: P, or (P_h, P_w): non-overlapping patches.
    in_channels: C.
    d_model: the residual width.
    num_heads: attention heads (must divide d_model).
    num_layers: transformer blocks.
    mlp_ratio: the MLP's hidden width per d_model.
    pool: 'cls' (a learned CLS token, classified) or 'mean' (mean of patches).
    dtype: computation dtype (e.g. jnp.bfloat16).
    param_dtype: parameter dtype.
    rngs: the `nnx.Rngs` for the initializers.

  Raises:
    ValueError: a patch size that does not divide the image size, an unknown
      pool, or a size that is not positive.

  Example:
    >>> jax.eval_shape(lambda x: ViT(10, rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((4, 28, 28, 1), jnp.float32)).shape
    (4, 10)
    >>> jax.eval_shape(
    ...     lambda x: ViT(100, image_size=(32, 24), patch_size=8, in_channels=3,
    ...                   pool='mean', rngs=nnx.Rngs(0))(x),
    ...     jax.ShapeDtypeStruct((2, 32, 24, 3), jnp.float32)).shape
    (2, 100)
  """

  def __init__(self, num_classes: int, image_size=28, patch_size=7,
               in_channels: int = 1, d_model: int = 64, num_heads: int = 4,
               num_layers: int = 2, mlp_ratio: int = 4, pool: str = 'cls',
               dtype: Optional[Any] = jnp.float32,
               param_dtype: Any = jnp.float32, *, rngs: nnx.Rngs):
    (h, w), (ph, pw) = _pair(image_size, 'image_size'), _pair(patch_size,
                                                             'patch_size')
    if h % ph or w % pw:
      raise ValueError(f'patch_size: got {patch_size!r}, which does not divide '
                       f'image_size {(h, w)}; pick a divisor of each side.')
    if pool not in POOLS:
      raise ValueError(f'pool: got {pool!r}; pass one of {POOLS}.')
    for name, value in (('num_classes', num_classes),
                        ('in_channels', in_channels), ('d_model', d_model),
                        ('num_layers', num_layers)):
      if not _checks.is_int(value) or value < 1:
        raise ValueError(f'{name}: got {value!r}; pass a positive integer.')
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.image_size, self.in_channels, self.pool = (h, w), in_channels, pool
    self.patch_embed = nnx.Conv(in_channels, d_model, (ph, pw),
                                strides=(ph, pw), padding='VALID', **kw)
    patches = (h // ph) * (w // pw)
    self.cls_token = nnx.Embed(1, d_model, **kw) if pool == 'cls' else None
    self.pos_embed = nnx.Embed(patches + (pool == 'cls'), d_model, **kw)
    self.blocks = nnx.List([
        TransformerBlock(d_model, num_heads, mlp_ratio, **kw)
        for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(d_model, **kw)
    self.head = nnx.Linear(d_model, num_classes, **kw)

  def __call__(self, images: jax.Array) -> jax.Array:
    """Logits [B, num_classes] of NHWC `images` [B, H, W, C]."""
    want = (*self.image_size, self.in_channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
      raise ValueError(f'images: got shape {images.shape}; pass [batch, '
                       f'{want[0]}, {want[1]}, {want[2]}] (NHWC).')
    x = self.patch_embed(images)
    x = x.reshape((x.shape[0], -1, x.shape[-1]))           # [B, N, d]
    batch = x.shape[0]
    if self.cls_token is not None:
      cls = self.cls_token(jnp.zeros((batch, 1), jnp.int32))  # [B, 1, d]
      x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), (batch, x.shape[1]))
    x = x + self.pos_embed(positions)
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    x = x[:, 0] if self.cls_token is not None else jnp.mean(x, axis=1)
    return self.head(x)
