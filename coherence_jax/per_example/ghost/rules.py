"""Per-layer rules of ghost norms: ‖A_iᵀ Δ_i‖² per example, and the layer's S.

A rule gets the layer's pure `apply(p, x)`, its params p (dict name -> float32
array), input x, output cotangent dz and the standard cotangents dp_std; it
returns the params cotangent (= S of the layer, float32) and {name: [B]
squared norms}. `ghost_layer` wraps `apply` in a `jax.custom_vjp` whose
backward runs the rule and returns the norms as the cotangent of dummy [B]
inputs. The form per param ('outer', 'gram' or 'materialize') is decided by
the plan (`choose_form`, the cheaper one) and passed in `info['forms']`.
Norms and sums are accumulated in float32 whatever the layer's dtype (bf16
activations and cotangents are cast first).

Rules: 'contraction' (Linear, LinearGeneral, Einsum, Embed.attend: see
contraction.py), 'lookup' (Embed.__call__), 'conv', 'norm', 'module' (the
per-module fallback: any module's per-example grads, a few examples at a
time) and 'registered' (a rule given to `register_ghost_rule`). Layers called more
than once are handled in reuse.py, from the same pieces.

Example:
  >>> choose_form(196, 288, 64)   # conv2 of the benchmark CNN
  'materialize'
"""

import itertools
from typing import Optional

import jax
import jax.numpy as jnp

from coherence_jax import microbatch
from coherence_jax import reductions
from coherence_jax.per_example.ghost import contraction
from coherence_jax.per_example.ghost import gram

FORMS = ('outer', 'gram', 'materialize')


def check_form(form: Optional[str]) -> None:
  """`form` forces a ghost form: None (cheapest per layer), 'gram', 'materialize'.

  Args:
    form: the `ghost_form` argument of the public functions.

  Raises:
    ValueError: anything else ('outer' is chosen, never forced).

  Example:
    >>> check_form('gram')
    >>> check_form('outer')
    Traceback (most recent call last):
    ValueError: ghost_form: got 'outer'; pass None (cheapest per layer), ...
  """
  if form not in (None, 'gram', 'materialize'):
    raise ValueError(
        f"ghost_form: got {form!r}; pass None (cheapest per layer), 'gram' or "
        "'materialize'.")


# What a materialized per-example gradient entry costs beyond the batch
# gradient it replaces, in multiply-adds: it is written once and read twice
# (its squared norm, its sum over examples), and per-example matmuls over T
# positions run slower than one matmul over all B·T. Calibrated on XLA:CPU
# (benchmarks/README_sequence.md): the ViT's layers (T = 50, T²(K+N)/(K N) =
# 24-39) and the GPT's (T = 128: 80-128) ran faster and in less compiled
# memory materialized than by Gram matrices. With 16 the Gram form stays for
# short sequences (T ≤ 32 at K = N = 128) and wide layers (a conv with K =
# 4608 at T = 49). Not measured on accelerators, where moving a float costs
# more multiply-adds than on a CPU.
MATERIALIZE_COST = 16


def choose_form(positions: int, d_in: int, d_out: int,
                gram_ok: bool = True, forced: Optional[str] = None) -> str:
  """Cheaper way to get ‖A_iᵀ Δ_i‖² for A_i [T, d_in], Δ_i [T, d_out].

  Both forms also give the layer's batch gradient: the Gram form computes it
  as usual (T d_in d_out per example) and adds the two Gram matrices,
  T²(d_in + d_out) per example; the materialized per-example gradients sum
  to it, so they add only their traffic, ~`MATERIALIZE_COST` d_in d_out per
  example. 'outer' for T = 1; 'gram' when T²(d_in + d_out) ≤
  MATERIALIZE_COST d_in d_out; else 'materialize' (per-example gradients, a
  few examples at a time: bounded memory). `forced` ('gram' /
  'materialize') overrides the choice where it applies.

  Args:
    positions: T, positions per example (1 for a plain Dense layer).
    d_in: input features per position (conv: window size x in-channels).
    d_out: output features per position.
    gram_ok: False where the Gram form does not apply (grouped or masked
      convs, circular / reflect / causal padding): always 'materialize'.
    forced: None, or 'gram' / 'materialize' to force that form (also for
      T = 1).

  Returns:
    'outer', 'gram' or 'materialize'.

  Example:
    >>> [choose_form(*layer) for layer in
    ...  [(1, 784, 128), (49, 4608, 512), (196, 288, 64), (50, 128, 512)]]
    ['outer', 'gram', 'materialize', 'materialize']
    >>> (choose_form(49, 4608, 512, forced='materialize'),
    ...  choose_form(49, 4608, 512, gram_ok=False))
    ('materialize', 'materialize')
  """
  if positions == 1 and forced is None:
    return 'outer'
  if not gram_ok:
    return 'materialize'
  if forced is not None:
    return forced
  gram = positions * positions * (d_in + d_out)
  return 'gram' if gram <= MATERIALIZE_COST * d_in * d_out else 'materialize'


# ----------------------------------------------------------- per-layer rules

def as_f32(x):
  """x in float32: norms and sums are accumulated in float32.

  Args:
    x: an array of any float dtype.

  Returns:
    `x` cast to float32.

  Example:
    >>> as_f32(jnp.ones(2, jnp.bfloat16)).dtype
    dtype('float32')
  """
  return x.astype(jnp.float32)


def _product_sq_norms(a: jax.Array, d: jax.Array, form: str):
  """Per-example ‖a_iᵀ d_i‖² for a [B, T, K], d [B, T, N] ('outer' / 'gram')."""
  del form  # T = 1 is the outer product either way
  return gram.sq_norms([gram.Factor(a[:, None], d[:, None])])


def per_example_param_grads(apply, p, x, dz, names):
  """Per-example grads of the layer's params `names`: vmap over examples.

  Args:
    apply: the layer as a pure `apply(p, x)`.
    p: its params {name: array}.
    x: the input, leading example axis B.
    dz: the output cotangent.
    names: the params to differentiate.

  Returns:
    {name: [B, *param.shape]}.

  Example:
    >>> g = per_example_param_grads(lambda p, x: x * p['w'], {'w': 2.0},
    ...                             jnp.arange(3.), jnp.ones(3), ('w',))
    >>> g['w']
    Array([0., 1., 2.], dtype=float32, weak_type=True)
  """
  fixed = {k: v for k, v in p.items() if k not in names}

  def one(xi, dzi):
    f = lambda sub: apply({**fixed, **sub}, xi[None])
    _, vjp = jax.vjp(f, {k: p[k] for k in names})
    return vjp(dzi[None])[0]

  return jax.vmap(one)(x, dz)


def _materialized(apply, p, x, dz, names, dp):
  """Fills dp and returns norms for `names` from per-example grads."""
  grads = per_example_param_grads(apply, p, x, dz, names)
  q = {}
  for name in names:
    g = as_f32(grads[name])
    q[name] = reductions.per_example_sq_norm(g)
    dp[name] = reductions.sum_over_examples(g).astype(p[name].dtype)
  return q


def _bias_rule(d, p, dp, q):
  if 'bias' in p:
    gb = jnp.sum(d, 1)
    q['bias'] = reductions.per_example_sq_norm(gb)
    dp['bias'] = reductions.sum_over_examples(gb).astype(p['bias'].dtype)


def _contraction_rule(info, apply, p, x, dz, dp_std):
  """Linear, LinearGeneral, Einsum and Embed.attend (see contraction.py)."""
  del apply
  spec = info['spec']
  name = spec.kernel
  form = info['forms'][name]
  dp, q = dict(dp_std), {}
  x32, d32 = as_f32(x), as_f32(dz)
  if spec.example_in_kernel:  # one kernel slice per example
    g = contraction.kernel_grad(spec, x32, d32)
    q[name] = reductions.per_example_sq_norm(contraction.example_slices(spec, g))
    dp[name] = g
  elif form == 'materialize':
    def part(x, d):
      g = contraction.per_example_kernel_grads(spec, as_f32(x), as_f32(d))
      return reductions.sum_over_examples(g), reductions.per_example_sq_norm(g)
    floats = x[0].size + dz[0].size + p[name].size
    dp[name], q[name] = over_example_chunks(part, (x, dz), floats)
  else:
    q[name] = gram.sq_norms([gram.Factor(*contraction.factors(spec, x32, d32))])
    dp[name] = contraction.kernel_grad(spec, x32, d32)
  if spec.bias is not None and 'bias' in p:
    q['bias'] = reductions.per_example_sq_norm(
        contraction.per_example_bias_grads(spec, d32))
    dp['bias'] = contraction.bias_grad(spec, d32, p['bias'].shape)
  return dp, q


def conv_patches(info, x):
  """im2col of the conv input by strided slices: [B, T, K], K = (*window, c_in).

  Matches nnx.Conv's layout, so Σ_t patchesᵀ Δ reshapes to the kernel. Pure data
  movement (lax.conv_general_dilated_patches is a conv with a one-hot kernel,
  several times the FLOPs of the layer itself on XLA:CPU).
  """
  window, strides = info['kernel_size'], info['strides']
  in_dil, k_dil = info['input_dilation'], info['kernel_dilation']
  spatial = x.shape[1:-1]
  dilated_in = [(n - 1) * d + 1 for n, d in zip(spatial, in_dil)]
  dilated_k = [(k - 1) * d + 1 for k, d in zip(window, k_dil)]
  padding = info['padding']
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(dilated_in, dilated_k, strides, padding)
  x = jax.lax.pad(as_f32(x), 0.0, [(0, 0, 0)] + [
      (lo, hi, d - 1) for (lo, hi), d in zip(padding, in_dil)] + [(0, 0, 0)])
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], dilated_k, strides)]
  cols = []
  for offset in itertools.product(*[range(k) for k in window]):
    start = [o * d for o, d in zip(offset, k_dil)]
    cols.append(jax.lax.slice(
        x, [0] + start + [0],
        [x.shape[0]] + [b + (n - 1) * s + 1 for b, n, s in
                        zip(start, out, strides)] + [x.shape[-1]],
        [1] + list(strides) + [1]))
  patches = jnp.stack(cols, axis=-2)
  return patches.reshape(x.shape[0], -1, patches.shape[-2] * patches.shape[-1])


def conv_kernel_grads(info, x, d):
  """Per-example kernel gradients [B, K, N] of a plain conv (`conv_info`
  'gram_ok'): patches(x_i)ᵀ d_i, d the output cotangents [B, T, N] float32."""
  return jnp.einsum('btk,btn->bkn', conv_patches(info, x), d)


def over_example_chunks(fn, arrays, floats_per_example: int,
                        chunk_floats: Optional[int] = None):
  """fn on chunks of examples (bounded memory); sums s, concatenates q.

  Args:
    fn: `fn(*chunk) -> (s, q)` with s summed over the chunk's examples and q
      per example (leading axis the chunk).
    arrays: arrays (or pytrees) with a shared leading example axis.
    floats_per_example: intermediate floats `fn` holds per example; chunks
      hold about `chunk_floats` of them (default _CHUNK_FLOATS).
    chunk_floats: the budget per chunk, if not _CHUNK_FLOATS.

  Returns:
    `(Σ s, concatenated q)`.

  Example:
    >>> s, q = over_example_chunks(lambda x: (x.sum(0), x.sum(1)),
    ...                            (jnp.ones((5, 2)),), 1 << 21)
    >>> s, q
    (Array([5., 5.], dtype=float32), Array([2., 2., 2., 2., 2.], dtype=float32))
  """
  size = arrays[0].shape[0]
  budget = _CHUNK_FLOATS if chunk_floats is None else chunk_floats
  chunk = max(1, min(size, budget // max(1, floats_per_example)))
  if chunk < size:
    # Prefer a divisor of the batch: no remainder to compile a second time.
    divisor = max(c for c in range(1, chunk + 1) if size % c == 0)
    chunk = divisor if 2 * divisor >= chunk else chunk
  return microbatch.microbatched(lambda c: fn(*c), tuple(arrays), chunk,
                                 combine=('sum', 'concat'))


_CHUNK_FLOATS = 1 << 22  # 16 MiB of float32 per chunk of examples


def _conv_rule(info, apply, p, x, dz, dp_std):
  size = x.shape[0]
  d = as_f32(dz).reshape(size, -1, dz.shape[-1])
  kernel = p['kernel']
  d_in = kernel.size // kernel.shape[-1]
  positions, d_out = d.shape[1], d.shape[2]
  form = info['forms']['kernel']
  dp, q = dict(dp_std), {}
  floats = positions * (d_in + d_out) + d_in * d_out
  if not info['gram_ok']:  # groups, masks, circular/reflect/causal padding
    q.update(_materialized(apply, p, x, dz, ('kernel',), dp))
  elif form == 'materialize' and info.get('top_level') and (
      _CHUNK_FLOATS // floats >= size):
    # Outside any loop, XLA:CPU runs vmap's per-example conv gradient (a
    # grouped convolution) with its fast kernels; in a loop (micro-batches,
    # example chunks) it is a naive loop, and patches times cotangents wins.
    q.update(_materialized(apply, p, x, dz, ('kernel',), dp))
  elif form == 'materialize':
    def part(x, d):
      g = conv_kernel_grads(info, x, d)
      return reductions.sum_over_examples(g), reductions.per_example_sq_norm(g)
    s, q['kernel'] = over_example_chunks(part, (x, d), floats)
    dp['kernel'] = s.reshape(kernel.shape).astype(kernel.dtype)
  else:
    def part(x, d):
      return 0.0, _product_sq_norms(conv_patches(info, x), d, form)
    q['kernel'] = over_example_chunks(
        part, (x, d), positions * (positions + d_in + d_out))[1]
  _bias_rule(d, p, dp, q)
  return dp, q


def lookup_grad(table: jax.Array, ids: jax.Array, d: jax.Array) -> jax.Array:
  """Σ_i of the lookup's per-example table gradients (jnp.take's semantics).

  Args:
    table: the embedding table [V, F] (float32 for float32 sums).
    ids: int token ids [B, ...].
    d: the output cotangent [B, ..., F].

  Returns:
    [V, F]: the cotangent of each row summed (negative ids wrap, ids out of
    range are dropped, as in the forward `jnp.take`).

  Example:
    >>> lookup_grad(jnp.zeros((3, 1)), jnp.array([[0, 2, 2]]), jnp.ones((1, 3, 1)))
    Array([[1.],
           [0.],
           [2.]], dtype=float32)
  """
  _, vjp = jax.vjp(lambda t: jnp.take(t, ids, axis=0), table)
  return vjp(d.astype(table.dtype))[0]


def _lookup_rule(info, apply, p, x, dz, dp_std):
  """Embed.__call__: token-equality Gram, or per-example grads."""
  dp = dict(dp_std)
  if info['forms']['embedding'] != 'gram':
    return dp, _materialized(apply, p, x, dz, ('embedding',), dp)
  table = p['embedding']
  d32 = as_f32(dz)
  factor = gram.Factor(gram.tokens(x, table.shape[0]),
                       d32.reshape(x.shape[0], 1, -1, table.shape[1]))
  dp['embedding'] = lookup_grad(table, x, d32)
  return dp, {'embedding': gram.sq_norms([factor])}


def _norm_rule(info, apply, p, x, dz, dp_std):
  del info
  dp = dict(dp_std)
  return dp, _materialized(apply, p, x, dz, tuple(p), dp)


def _module_rule(info, apply, p, x, dz, dp_std):
  """Per-module fallback: the module's per-example grads, a few at a time."""
  del info
  names = tuple(p)

  def part(x, d):
    g = per_example_param_grads(apply, p, x, d, names)
    g = {n: as_f32(g[n]) for n in names}
    return (jnp.zeros((), jnp.float32),
            {n: reductions.per_example_sq_norm(g[n]) for n in names})

  floats = x[0].size + dz[0].size + 2 * sum(v.size for v in p.values())
  _, q = over_example_chunks(part, (x, dz), floats)
  return dict(dp_std), q


def _registered_rule(info, apply, p, x, dz, dp_std):
  """A rule given to `register_ghost_rule`: its norms, the standard S."""
  del apply
  module = info['module']
  q = info['sq_norms'](module, p, x, as_f32(dz))
  missing = set(p) - set(q or ())
  if missing:
    raise ValueError(
        f'register_ghost_rule: the rule of {type(module).__name__} returned '
        f'norms for {sorted(q or ())}, not for {sorted(missing)}; return '
        '{param name: [B] squared norms} for every param of the module.')
  out = {}
  for name in p:
    v = as_f32(jnp.asarray(q[name]))
    if v.shape != (x.shape[0],):
      raise ValueError(
          f'register_ghost_rule: the rule of {type(module).__name__} returned '
          f'shape {v.shape} for {name!r}; return one squared norm per '
          f'example, shape ({x.shape[0]},).')
    out[name] = v
  return dict(dp_std), out


RULES = {'contraction': _contraction_rule, 'lookup': _lookup_rule,
         'conv': _conv_rule, 'norm': _norm_rule, 'module': _module_rule,
         'registered': _registered_rule}


def rule_name(kind: str, method: str) -> str:
  """The key in RULES of a layer kind's call of `method`.

  Args:
    kind: the layer kind ('linear', 'embed', 'conv', 'norm').
    method: the method called ('__call__' or 'attend').

  Returns:
    'contraction', 'lookup', 'conv' or 'norm'.

  Example:
    >>> rule_name('embed', 'attend'), rule_name('embed', '__call__')
    ('contraction', 'lookup')
  """
  if kind in ('module', 'registered'):
    return kind
  if kind == 'linear' or method == 'attend':
    return 'contraction'
  return 'lookup' if kind == 'embed' else kind


def ghost_layer(rule, info, apply, p, x, q_slots):
  """apply(p, x) whose backward also writes per-example norms into q_slots.

  Forward: `apply(p, x)`. Backward: the standard cotangents of p and x, with
  `rule` filling in S of the layer, and the per-example squared norms
  {name: [B]} as the cotangent of `q_slots`. So `jax.grad` with respect to
  zero `q_slots` returns the norms.

  Args:
    rule: one of RULES.
    info: the call's static facts (`ghost_plan.Call.info`) and 'forms':
      {param name: 'outer' / 'gram' / 'materialize'}.
    apply: `apply(p, x) -> z`, the layer's own call as a pure function
      (casting p to the layer's param dtypes where those are not float32).
    p: the layer's params, {name: float32 array}.
    x: the layer input, leading example axis B.
    q_slots: {name: zeros [B]} per param of p.

  Returns:
    `apply(p, x)`.

  Example (a Dense layer: ‖x_i‖² ‖δ_i‖² per example, δ_i = (1, 1)):
    >>> p = {'kernel': jnp.ones((3, 2))}
    >>> x = jnp.arange(6.).reshape(2, 3)
    >>> dense = lambda p, x: x @ p['kernel']
    >>> info = {'spec': contraction.of_linear(2, use_bias=False),
    ...         'forms': {'kernel': 'outer'}}
    >>> def total(p, q):
    ...   z = ghost_layer(RULES['contraction'], info, dense, p, x, q)
    ...   return z.sum()
    >>> dp, q = jax.grad(total, argnums=(0, 1))(p, {'kernel': jnp.zeros(2)})
    >>> q['kernel'], dp['kernel'][:, 0]   # (5, 50) * 2; column sums of x
    (Array([ 10., 100.], dtype=float32), Array([3., 5., 7.], dtype=float32))
  """

  @jax.custom_vjp
  def layer(p, x, q_slots):
    del q_slots
    return apply(p, x)

  def fwd(p, x, q_slots):
    del q_slots
    return apply(p, x), (p, x)

  def bwd(res, dz):
    p, x = res
    _, vjp_fn = jax.vjp(apply, p, x)  # forward recompute is dead code for dense/conv
    dp_std, dx = vjp_fn(dz)
    dp, q = rule(info, apply, p, x, dz, dp_std)
    return dp, dx, q

  layer.defvjp(fwd, bwd)
  return layer(p, x, q_slots)
