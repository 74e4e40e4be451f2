"""Per-example ‖Σ_j A_jᵀ D_j‖² from Gram matrices, without forming the sum.

A layer called k times per example (weight tying, a block applied twice, a
Python loop) has per-example gradient g_i = Σ_j Σ_t u_{jt} ⊗ w_{jt}, with u
and w the call's two factors at position t (input and output cotangent of a
dense layer). Its squared norm needs the cross terms of the calls:

  ‖g_i‖² = Σ_{j,j'} Σ_{t,t'} (u_{jt} · u_{j't'}) (w_{jt} · w_{j't'}),

O(T²) per pair of calls, never O(#params). A factor's left side is dense
[B, G, T, K] or token ids [B, G, T] (the one-hot rows of an embedding lookup,
never formed: their dot products are token equalities and gathers); the
right side is dense [B, G, T, N]. G counts independent kernel slices (heads
of a per-head einsum): their norms add.

Example (one Dense call, T = 1: ‖a‖² ‖d‖²; a lookup of tokens (2, 2) with
unit cotangents: ‖2 e_2 ⊗ (1, 1)‖² = 8):
  >>> dense = Factor(jnp.ones((1, 1, 1, 3)), 2 * jnp.ones((1, 1, 1, 2)))
  >>> sq_norms([dense])
  Array([24.], dtype=float32)
  >>> lookup = Factor(tokens(jnp.array([[2, 2]]), 5), jnp.ones((1, 1, 2, 2)))
  >>> sq_norms([lookup])
  Array([8.], dtype=float32)
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


class Factor(NamedTuple):
  """One call's g_i = Σ_{g,t} left[i,g,t] ⊗ right[i,g,t].

  Attributes:
    left: float [B, G, T, K], or int token ids [B, G, T] (-1: no row).
    right: float [B, G, T, N].
  """
  left: jax.Array
  right: jax.Array

  @property
  def is_tokens(self) -> bool:
    return jnp.issubdtype(self.left.dtype, jnp.integer)


def tokens(ids: jax.Array, vocab: int) -> jax.Array:
  """Lookup ids as a factor's left side [B, 1, T]: the rows jnp.take reads.

  Negative ids wrap (as in jnp.take); ids outside [-vocab, vocab) read no
  row (their gradient is dropped) and become -1.

  Args:
    ids: int [B, ...] token ids.
    vocab: the number of rows of the table.

  Returns:
    int32 [B, 1, T] with T the product of the non-example axes.

  Example:
    >>> tokens(jnp.array([[0, -1, 7]]), 5)
    Array([[[ 0,  4, -1]]], dtype=int32)
  """
  ids = ids.reshape(ids.shape[0], 1, -1).astype(jnp.int32)
  ids = jnp.where(ids < 0, ids + vocab, ids)
  return jnp.where((ids >= 0) & (ids < vocab), ids, -1)


def _dots(u: jax.Array, v: jax.Array) -> jax.Array:
  return jnp.einsum('bgtk,bgsk->bgts', u, v, precision=_HIGHEST)


def _token_dense(ids: jax.Array, dense: jax.Array) -> jax.Array:
  """[B, G, T, S]: dense[b, g, s, ids[b, g, t]] (0 where ids is -1)."""
  b, g, s, _ = dense.shape
  t = ids.shape[2]
  index = jnp.broadcast_to(jnp.maximum(ids, 0)[:, :, None, :], (b, g, s, t))
  picked = jnp.take_along_axis(dense, index, axis=3).swapaxes(2, 3)
  return jnp.where(ids[..., None] >= 0, picked, 0.0)


def left_dots(f: Factor, h: Factor) -> jax.Array:
  """[B, G, T_f, T_h]: the dot products of the left sides of two factors.

  Args:
    f: a `Factor`.
    h: a `Factor` of the same layer.

  Returns:
    u_{ft} · u_{hs} for every pair of positions.

  Example:
    >>> ids = Factor(tokens(jnp.array([[1, 3]]), 4), jnp.ones((1, 1, 2, 2)))
    >>> left_dots(ids, ids)[0, 0]
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
  """
  if f.is_tokens and h.is_tokens:
    same = f.left[..., :, None] == h.left[..., None, :]
    return (same & (f.left[..., :, None] >= 0)).astype(jnp.float32)
  if f.is_tokens:
    return _token_dense(f.left, h.left)
  if h.is_tokens:
    return _token_dense(h.left, f.left).swapaxes(2, 3)
  return _dots(f.left, h.left)


def sq_norms(factors: Sequence[Factor]) -> jax.Array:
  """‖Σ_j g_j‖² per example, g_j the per-example gradients of the factors.

  Args:
    factors: the `Factor`s of one param, one per call, with equal B, G, K
      (or vocabulary) and N; T may differ between calls.

  Returns:
    float32 [B].

  Example (a layer applied twice to the same input: ‖2g‖² = 4‖g‖²):
    >>> f = Factor(jnp.ones((2, 1, 3, 2)), jnp.ones((2, 1, 3, 4)))
    >>> sq_norms([f, f]) / sq_norms([f])
    Array([4., 4.], dtype=float32)
  """
  if len(factors) == 1 and not factors[0].is_tokens and (
      factors[0].left.shape[2] == 1):  # Goodfellow's ‖a‖² ‖d‖²
    f = factors[0]
    return jnp.sum(jnp.sum(f.left ** 2, (2, 3)) * jnp.sum(f.right ** 2, (2, 3)),
                   1)
  total = 0.0
  for j, f in enumerate(factors):
    for k in range(j, len(factors)):
      h = factors[k]
      block = jnp.sum(left_dots(f, h) * _dots(f.right, h.right), (1, 2, 3))
      total = total + (block if k == j else 2.0 * block)
  return total
