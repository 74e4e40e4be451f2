"""The one micro-batching routine: apply a function to chunks of a batch.

Every path that bounds memory by processing a few examples at a time (per-
example gradients, ghost norms, coherence statistics, streaming robust
gradients, order statistics over many rows) goes through `microbatched`.
Chunks are `lax.dynamic_slice`s of the batch taken inside a `lax.scan` (or
`lax.map`), so only one chunk's intermediates are alive at a time; a
remainder that does not fill a chunk is processed once more at its own size,
so every example counts exactly once.

Example:
  >>> microbatched(lambda b: 2 * b, jnp.arange(5.), 2)  # chunks 2, 2, 1
  Array([0., 2., 4., 6., 8.], dtype=float32)
"""

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp

from coherence_jax import _checks
from coherence_jax import mesh_axes
from coherence_jax._tree import PyTree

COMBINES = ('concat', 'sum', 'fold')
Combine = Union[str, Any]  # one of COMBINES, or a prefix tree of 'concat'/'sum'


def microbatched(fn: Callable[..., PyTree], batch: PyTree,
                 microbatch_size: Optional[int], *, combine: Combine = 'concat',
                 init: Optional[PyTree] = None) -> PyTree:
  """Applies `fn` to chunks of `microbatch_size` examples and combines.

  Args:
    fn: `fn(chunk) -> out` for 'concat' / 'sum', or `fn(carry, chunk) ->
      carry` for 'fold'. `chunk` has the structure of `batch`.
    batch: pytree of arrays (or pytrees registered as such, e.g. factored
      rows) sharing a leading example axis B.
    microbatch_size: examples per chunk; None (or >= B) runs `fn` once on the
      whole batch.
    combine: 'concat' joins the chunks' outputs along their leading axis
      (outputs are per example); 'sum' adds them (outputs are sums over
      examples; a running sum is carried, never a stack); 'fold' threads a
      carry through the chunks in order. A prefix tree of 'concat'/'sum'
      (e.g. `('sum', 'concat')` for an output `(s, q)`) mixes the two.
    init: the initial carry for 'fold'.

  Returns:
    The combined result; equal to `fn(batch)` for 'concat' and 'sum' up to
    the order of floating-point additions. For 'fold', the final carry.

  Raises:
    ValueError: a bad `combine`, 'fold' without `init`, a bad
      `microbatch_size`, or a batch without a shared leading axis B >= 1.

  Example:
    >>> sq = lambda b: b['x'] ** 2
    >>> microbatched(sq, {'x': jnp.arange(5.)}, 2)
    Array([ 0.,  1.,  4.,  9., 16.], dtype=float32)
    >>> microbatched(lambda b: b['x'].sum(), {'x': jnp.arange(5.)}, 2,
    ...              combine='sum')
    Array(10., dtype=float32)
    >>> s, q = microbatched(lambda x: (x.sum(), x ** 2), jnp.arange(5.), 2,
    ...                     combine=('sum', 'concat'))
    >>> float(s), q.shape
    (10.0, (5,))
    >>> count = lambda carry, x: carry + x.shape[0]  # chunk sizes: 2, 2, 1
    >>> int(microbatched(count, jnp.arange(5.), 2, combine='fold',
    ...                  init=jnp.int32(0)))
    5
  """
  fold = isinstance(combine, str) and combine == 'fold'
  if fold and init is None:
    raise ValueError("init: combine='fold' needs the initial carry.")
  _check_combine(combine)
  _checks.check_microbatch_size(microbatch_size)
  size = _checks.batch_size(batch)
  if microbatch_size is None or microbatch_size >= size:
    return fn(init, batch) if fold else fn(batch)
  num_full, remainder = divmod(size, microbatch_size)

  def chunk(start, length):
    return jax.tree.map(
        lambda x: jax.lax.dynamic_slice_in_dim(x, start, length, 0), batch)

  starts = jnp.arange(num_full) * microbatch_size
  tail = chunk(num_full * microbatch_size, remainder) if remainder else None
  if fold:
    carry = jax.lax.scan(lambda c, s: (fn(c, chunk(s, microbatch_size)), None),
                         init, starts)[0]
    return fn(carry, tail) if remainder else carry

  first = chunk(0, microbatch_size)
  rules = _rules(combine, jax.eval_shape(fn, first))
  zeros = jax.tree.map(
      lambda rule, s: (mesh_axes.like_varying(jnp.zeros(s.shape, s.dtype), s)
                       if rule == 'sum' else None),
      rules, jax.eval_shape(fn, first))

  def body(acc, start):
    out = fn(chunk(start, microbatch_size))
    new_acc = jax.tree.map(lambda r, a, o: a + o if r == 'sum' else None,
                           rules, acc, out)
    stacked = jax.tree.map(lambda r, o: o if r == 'concat' else None, rules,
                           out)
    return new_acc, stacked

  sums, stacked = jax.lax.scan(body, zeros, starts)
  result = jax.tree.map(
      lambda r, s, st: s if r == 'sum' else st.reshape((-1,) + st.shape[2:]),
      rules, sums, stacked)
  if not remainder:
    return result
  rest = fn(tail)
  return jax.tree.map(
      lambda r, a, b: a + b if r == 'sum' else jnp.concatenate([a, b]),
      rules, result, rest)


def _check_combine(combine) -> None:
  leaves = jax.tree.leaves(combine)
  if not leaves or any(c not in COMBINES for c in leaves) or (
      'fold' in leaves and combine != 'fold'):
    raise ValueError(
        f"combine: got {combine!r}; pass 'concat', 'sum', 'fold' or a prefix "
        "tree of 'concat' / 'sum' matching fn's output.")


def _rules(combine, out_shape) -> PyTree:
  """`combine` broadcast to every leaf of `fn`'s output."""
  return jax.tree.map(lambda rule, sub: jax.tree.map(lambda _: rule, sub),
                      combine, out_shape)
