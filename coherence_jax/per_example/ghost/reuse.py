"""Ghost norms of a layer called k > 1 times per example (shared weights).

Example i's gradient is g_i = Σ_j g_ij over the calls j, and ‖g_i‖² needs the
cross terms ⟨g_ij, g_ij'⟩. The calls' inputs x_j and output cotangents dz_j
(from zero perturbations of their outputs) give them exactly:
  - Linear, LinearGeneral, Einsum, Embed (lookup and attend, tied output
    heads included): the Gram form over the positions of all calls
    (gram.py), or the per-example gradients Σ_j g_ij formed a few examples at
    a time, whichever the plan chose by cost;
  - Conv and norm layers: per-example gradients of each call, summed.
S of the layer (float32) comes from the same inputs and cotangents.

Example (one Linear applied twice, Gram form):
  >>> spec = contraction.of_linear(2, use_bias=False)
  >>> calls = [ghost_plan.Call('__call__', {}, {'spec': spec}, (2, 3), (2, 3),
  ...                          jnp.float32)] * 2
  >>> layer = ghost_plan.Layer(('dense',), 'linear', ('kernel',), calls,
  ...                          forms={'kernel': 'gram'})
  >>> x, dz = jnp.ones((2, 3)), jnp.ones((2, 3))
  >>> dp, q = reused_layer(layer, [None] * 2, {'kernel': jnp.eye(3)},
  ...                      [x, x], [dz, dz])
  >>> q['kernel']   # ‖2 · 1 1ᵀ‖² = 4 · 9
  Array([36., 36.], dtype=float32)
"""

from typing import Callable, Dict, List, Sequence, Tuple

import jax

from coherence_jax import reductions
from coherence_jax.per_example.ghost import contraction
from coherence_jax.per_example.ghost import gram
from coherence_jax.per_example.ghost import plan as ghost_plan
from coherence_jax.per_example.ghost import rules as ghost_rules

as_f32 = ghost_rules.as_f32


def _chunked(per_example_grads, arrays, floats_per_example):
  """(Σ_i g_i, ‖g_i‖²) per name, g from `per_example_grads(*chunk)`."""
  def part(*chunk):
    grads = per_example_grads(*chunk)
    return ({n: reductions.sum_over_examples(g) for n, g in grads.items()},
            {n: reductions.per_example_sq_norm(g) for n, g in grads.items()})
  return ghost_rules.over_example_chunks(
      part, tuple(arrays), floats_per_example)


def _floats(xs, dzs, p) -> int:
  return (sum(x[0].size for x in xs) + sum(d[0].size for d in dzs)
          + sum(v.size for v in p.values()))


def _linear(layer, p, xs, dzs):
  specs = [c.info['spec'] for c in layer.calls]
  form = layer.forms['kernel']
  dp, q = {}, {}
  if specs[0].example_in_kernel:  # one kernel slice per example
    g = sum(contraction.kernel_grad(s, as_f32(x), as_f32(d))
            for s, x, d in zip(specs, xs, dzs))
    q['kernel'] = reductions.per_example_sq_norm(
        contraction.example_slices(specs[0], g))
    dp['kernel'] = g
  elif form == 'materialize':
    k = len(specs)

    def grads(*chunk):
      return {'kernel': sum(
          contraction.per_example_kernel_grads(s, as_f32(x), as_f32(d))
          for s, x, d in zip(specs, chunk[:k], chunk[k:]))}
    dp, q = _chunked(grads, list(xs) + list(dzs),
                     _floats(xs, dzs, {'kernel': p['kernel']}))
  else:
    canonical = specs[0].partition
    factors = []
    for s, x, d in zip(specs, xs, dzs):
      a, b = contraction.factors(s, as_f32(x), as_f32(d))
      factors.append(gram.Factor(a, b) if s.partition == canonical
                     else gram.Factor(b, a))
    q['kernel'] = gram.sq_norms(factors)
    dp['kernel'] = sum(contraction.kernel_grad(s, as_f32(x), as_f32(d))
                       for s, x, d in zip(specs, xs, dzs))
  if 'bias' in p:
    gb = sum(contraction.per_example_bias_grads(s, as_f32(d))
             for s, d in zip(specs, dzs))
    q['bias'] = reductions.per_example_sq_norm(gb)
    dp['bias'] = sum(contraction.bias_grad(s, as_f32(d), p['bias'].shape)
                     for s, d in zip(specs, dzs))
  return dp, q


def _embed(layer, applies, p, xs, dzs):
  table = p['embedding']
  vocab, feat = table.shape
  calls = layer.calls
  if layer.forms['embedding'] == 'materialize':
    k = len(calls)

    def grads(*chunk):
      total = 0.0
      for c, apply, x, d in zip(calls, applies, chunk[:k], chunk[k:]):
        if c.method == 'attend':
          total = total + contraction.per_example_kernel_grads(
              c.info['spec'], as_f32(x), as_f32(d))
        else:
          total = total + ghost_rules.per_example_param_grads(
              apply, p, x, d, ('embedding',))['embedding']
      return {'embedding': total}
    return _chunked(grads, list(xs) + list(dzs), _floats(xs, dzs, p))
  factors, dp = [], 0.0
  for c, x, d in zip(calls, xs, dzs):
    d32 = as_f32(d)
    if c.method == 'attend':  # the table's (vocab, feature) sides: (d, q)
      a, b = contraction.factors(c.info['spec'], as_f32(x), d32)
      factors.append(gram.Factor(b, a))
      dp = dp + contraction.kernel_grad(c.info['spec'], as_f32(x), d32)
    else:
      factors.append(gram.Factor(gram.tokens(x, vocab),
                                 d32.reshape(x.shape[0], 1, -1, feat)))
      dp = dp + ghost_rules.lookup_grad(table, x, d32)
  return {'embedding': dp}, {'embedding': gram.sq_norms(factors)}


def _materialized(layer, applies, p, xs, dzs):
  k = len(layer.calls)
  names = tuple(p)

  def grads(*chunk):
    total = {n: 0.0 for n in names}
    for apply, x, d in zip(applies, chunk[:k], chunk[k:]):
      g = ghost_rules.per_example_param_grads(
          apply, p, x, d, names)
      total = {n: total[n] + as_f32(g[n]) for n in names}
    return total
  return _chunked(grads, list(xs) + list(dzs), _floats(xs, dzs, p))


def reused_layer(layer: ghost_plan.Layer, applies: Sequence[Callable],
                 p: Dict[str, jax.Array], xs: List[jax.Array],
                 dzs: List[jax.Array]) -> Tuple[Dict[str, jax.Array],
                                                 Dict[str, jax.Array]]:
  """S and per-example squared norms of a layer's params over all its calls.

  Args:
    layer: the planned layer (its calls and forms).
    applies: per call, the call as a pure `apply(p, x)` (used for Embed
      lookups that are materialized, conv and norm layers).
    p: the layer's params, {name: float32 array}.
    xs: per call, the input.
    dzs: per call, the output cotangent.

  Returns:
    `(dp, q)`: {name: Σ_i g_i (float32)} and {name: float32 [B] ‖g_i‖²}.
  """
  if layer.kind == 'linear':
    return _linear(layer, p, xs, dzs)
  if layer.kind == 'embed':
    return _embed(layer, applies, p, xs, dzs)
  return _materialized(layer, applies, p, xs, dzs)
