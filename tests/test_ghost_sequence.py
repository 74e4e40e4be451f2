"""Ghost norms of sequence models: LinearGeneral, Einsum, attention, shared weights.

References: per-example gradients by `jax.vmap` of `jax.grad` (and, once, a
Python loop of `jax.grad`), their squared norms and sums.

float32 tolerance (as in test_ghost.py): rtol 1e-4 with an absolute floor of
1e-5 × the largest reference value of the leaf. Ghost and vmap sum the same
products in other orders: Gram forms add ≲ (2 × 16)² products per example,
per-example gradients ≲ 16 positions, S ≲ 9 examples; round-to-nearest
errors are ~√n·EPS32 ≈ 1e-6 relative to the terms. Params whose gradient is
zero in exact arithmetic (attention's key bias: softmax ignores a constant
shift of a query's logits) hold only rounding noise, so the floor there is
1e-6 × the largest value of the model's leaves. A wrong rule, a missing cross
term or a 2x error is O(1) off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from coherence_jax import coherence
from coherence_jax import reductions
from coherence_jax.per_example import ghost

RTOL = 1e-4  # see the module docstring


# ------------------------------------------------------------------ helpers
def smooth_loss(model, batch):
  """A nonlinear per-example loss of any output shape, [B]."""
  out = model(batch['x'])
  return jnp.sum(jnp.sin(out) ** 2 + 0.1 * out, axis=tuple(range(1, out.ndim)))


def assert_trees_close(got, want, what, rtol=RTOL, floor=1e-5, model_floor=0.0):
  scale = max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want))

  def check(path, g, w):
    g, w = np.asarray(g), np.asarray(w)
    atol = floor * np.max(np.abs(w)) + model_floor * scale + 1e-20
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol,
                               err_msg=what + jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(check, got, want)


def _reference(loss_fn, params, batch):
  def one(p, example):
    return loss_fn(p, jax.tree.map(lambda x: x[None], example))[0]
  grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(params, batch)
  return (jax.tree.map(reductions.per_example_sq_norm, grads),
          jax.tree.map(lambda g: g.sum(0), grads))


def reference(loss_fn, params, batch):
  """(‖g_i‖², Σ_i g_i) per leaf from jax.vmap of jax.grad, one example each."""
  return jax.jit(lambda p, b: _reference(loss_fn, p, b))(params, batch)


def assert_forms_match_vmap(loss_fn, params, batch, forms=(None,),
                            model_floor=0.0):
  """S and norms with method='ghost', each form, equal vmap (one compile)."""
  def every_form(p, b):
    return [ghost.sum_and_sq_norms(loss_fn, p, b, method='ghost',
                                   ghost_form=form) for form in forms
            ], _reference(loss_fn, p, b)
  got, (want_norms, want_sums) = jax.jit(every_form)(params, batch)
  for form, (sums, norms) in zip(forms, got):
    assert_trees_close(norms, want_norms, f'form={form} norms',
                       model_floor=model_floor)
    assert_trees_close(sums, want_sums, f'form={form} S',
                       model_floor=model_floor)


def normal_batch(shape, seed=0):
  return {'x': jax.random.normal(jax.random.key(seed), shape)}


def rngs(seed=0):
  return nnx.Rngs(seed)


def no_fallback(loss_fn, params, batch, form=None):
  ways = ghost.norm_paths(loss_fn, params, batch, method='ghost',
                          ghost_form=form)
  assert 'vmap' not in ways.values(), ways
  return ways


# ------------------------------------------------- LinearGeneral and Einsum
class Contractions(nnx.Module):
  """LinearGeneral / Einsum with tuple features, other axes, groups, batch_axis."""

  def __init__(self):
    self.split = nnx.LinearGeneral(4, (2, 3), rngs=rngs(1))          # [B,T,2,3]
    self.heads = nnx.Einsum('bthd,hdk->bthk', (2, 3, 4), (2, 4),
                            rngs=rngs(2))                            # groups h
    self.merge = nnx.LinearGeneral((2, 4), 5, axis=(-2, -1),
                                   rngs=rngs(3))                     # [B,T,5]
    self.mix = nnx.LinearGeneral(6, 3, axis=1, rngs=rngs(4))          # [B,5,3]
    self.tail = nnx.Einsum('...d,dk->...k', (3, 2), rngs=rngs(5))     # [B,5,2]

  def __call__(self, x):
    x = jnp.tanh(self.split(x))
    x = jnp.tanh(self.heads(x))
    x = jnp.tanh(self.merge(x))
    x = jnp.tanh(self.mix(x))
    return self.tail(x)


# The default run checks the Gram form; `make test-all` adds the per-example
# gradients (materialize) form, a separate program to compile.
FORMS = ['gram', pytest.param('materialize', marks=pytest.mark.slow)]


@pytest.mark.parametrize('form', FORMS)
def test_linear_general_and_einsum(form):
  loss_fn, params = cj.from_nnx(Contractions(), smooth_loss)
  batch = normal_batch((5, 6, 4))
  no_fallback(loss_fn, params, batch)
  assert_forms_match_vmap(loss_fn, params, batch, (form,))


def test_linear_general_kernel_slice_per_example():
  """batch_axis={0: B}: example i uses kernel[i] only, so its gradient is the
  i-th slice of the batch gradient (vmap cannot run a B-sized kernel on one
  example; the reference is jax.grad of the summed loss)."""
  class PerExample(nnx.Module):
    def __init__(self, size):
      self.own = nnx.LinearGeneral(3, 2, batch_axis={0: size}, rngs=rngs())

    def __call__(self, x):
      return self.own(x)

  loss_fn, params = cj.from_nnx(PerExample(4), smooth_loss)
  batch = normal_batch((4, 5, 3))
  assert no_fallback(loss_fn, params, batch)['own/kernel'] == (
      'ghost:materialize')
  sums, norms = jax.jit(lambda p, b: ghost.sum_and_sq_norms(
      loss_fn, p, b, method='ghost'))(params, batch)
  total = jax.jit(jax.grad(lambda p: jnp.sum(loss_fn(p, batch))))(params)
  assert_trees_close(sums, total, 'S')
  assert_trees_close(
      norms, jax.tree.map(reductions.per_example_sq_norm, total), 'norms')


# ------------------------------------------------------------ shared weights
class Shared(nnx.Module):
  """Tied embedding (lookup + attend), a block applied twice, a Python loop."""

  def __init__(self, vocab=7, dim=6):
    self.embed = nnx.Embed(vocab, dim, rngs=rngs(1))
    self.norm = nnx.LayerNorm(dim, rngs=rngs(2))
    self.dense = nnx.LinearGeneral(dim, (2, dim // 2), rngs=rngs(3))
    self.loop = nnx.Linear(dim, dim, use_bias=False, rngs=rngs(5))

  def block(self, x):
    return x + jnp.tanh(self.dense(self.norm(x)).reshape(x.shape))

  def __call__(self, tokens):
    x = self.block(self.block(self.embed(tokens)))
    for _ in range(2):
      x = jnp.tanh(self.loop(x))
    pooled = self.loop(jnp.mean(x, 1))      # once more without positions
    return self.embed.attend(x + pooled[:, None])


def token_batch(shape, vocab=7, seed=3):
  return {'x': jax.random.randint(jax.random.key(seed), shape, -2, vocab)}


@pytest.mark.parametrize('form', FORMS)
def test_shared_weights_match_vmap(form):
  loss_fn, params = cj.from_nnx(Shared(), smooth_loss)
  batch = token_batch((4, 5))  # negative ids wrap, as in jnp.take
  ways = no_fallback(loss_fn, params, batch, form=form)
  assert ways['embed/embedding'] == ways['loop/kernel'] == f'ghost:{form}'
  assert_forms_match_vmap(loss_fn, params, batch, (form,))


def test_shared_layer_matches_python_loop_of_grads():
  """Independent reference: one jax.grad per example, by hand."""
  class Twice(nnx.Module):
    def __init__(self):
      self.dense = nnx.Linear(3, 3, rngs=rngs())

    def __call__(self, x):
      return self.dense(jnp.sin(self.dense(x)))

  loss_fn, params = cj.from_nnx(Twice(), smooth_loss)
  batch = normal_batch((2, 4, 3))
  norms = jax.jit(lambda p, b: ghost.sum_and_sq_norms(
      loss_fn, p, b, method='ghost', ghost_form='gram')[1])(params, batch)
  grad_one = jax.jit(jax.grad(lambda p, example: loss_fn(p, example)[0]))
  for i in range(2):
    g = grad_one(params, jax.tree.map(lambda x: x[i:i + 1], batch))
    want = jax.tree.map(lambda v: jnp.sum(v * v), g)
    assert_trees_close(jax.tree.map(lambda q: q[i], norms), want, f'loop {i}')


# ------------------------------------------------------ a small GPT-style model
class Block(nnx.Module):
  """Pre-LayerNorm: x + attention(norm(x)), then x + MLP(norm(x))."""

  def __init__(self, dim, heads, dtype, seed):
    kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs(seed))
    self.norm1 = nnx.LayerNorm(dim, **kw)
    self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, **kw)
    self.norm2 = nnx.LayerNorm(dim, **kw)
    self.up = nnx.Linear(dim, 4 * dim, **kw)
    self.down = nnx.Linear(4 * dim, dim, **kw)

  def __call__(self, x, mask):
    x = x + self.attn(self.norm1(x), mask=mask)
    return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))


class GPT(nnx.Module):
  """Token + position Embed, pre-LN blocks, output tied to the token Embed."""

  def __init__(self, vocab=7, length=4, dim=8, heads=2, layers=1,
               dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=dtype)
    self.tokens = nnx.Embed(vocab, dim, rngs=rngs(1), **kw)
    self.positions = nnx.Embed(length, dim, rngs=rngs(2), **kw)
    self.blocks = nnx.List([Block(dim, heads, dtype, 3 + i)
                            for i in range(layers)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs(9), **kw)

  def __call__(self, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = self.tokens(tokens) + self.positions(positions)
    mask = nnx.make_causal_mask(tokens)
    for block in self.blocks:
      x = block(x, mask)
    return self.tokens.attend(self.norm(x))


def next_token_loss(model, batch):
  logits = model(batch['tokens']).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits)
  picked = jnp.take_along_axis(logp, batch['targets'][..., None], -1)
  return -jnp.mean(picked[..., 0], -1)


def lm_batch(size, length=4, vocab=7, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'tokens': jax.random.randint(k1, (size, length), 0, vocab),
          'targets': jax.random.randint(k2, (size, length), 0, vocab)}


def test_gpt_paths_have_no_fallback():
  # Only shapes matter: an abstract model (nnx.eval_shape) compiles nothing.
  loss_fn, params = cj.from_nnx(nnx.eval_shape(lambda: GPT(layers=2)),
                                next_token_loss)
  ways = no_fallback(loss_fn, params, lm_batch(4))
  assert ways['blocks/0/attn/query/kernel'] == 'ghost:gram'
  assert ways['blocks/1/attn/out/kernel'] == 'ghost:gram'
  assert ways['tokens/embedding'].startswith('ghost:')
  assert len(ways) == len(jax.tree.leaves(params))


@pytest.mark.slow
def test_gpt_matches_vmap_microbatched():
  """Norms and coherence_stats, 7 examples in micro-batches of 3 (+ 1)."""
  loss_fn, params = cj.from_nnx(GPT(layers=2), next_token_loss)
  batch = lm_batch(7)
  fn = jax.jit(lambda p, b: (
      ghost.per_example_sq_norms(loss_fn, p, b, method='ghost',
                                 microbatch_size=3),
      coherence.coherence_stats(loss_fn, p, b, method='ghost',
                                microbatch_size=3)))
  norms, stats = fn(params, batch)
  want_norms, want_sums = reference(loss_fn, params, batch)
  assert_trees_close(norms, want_norms, 'norms', model_floor=1e-6)
  assert_trees_close(stats.sum_grads, want_sums, 'S', model_floor=1e-6)
  assert_trees_close(stats.sq_norms(), jax.tree.map(jnp.sum, want_norms), 'Q',
                     model_floor=1e-6)
  want = cj.CoherenceStats.from_sums(
      want_sums, jax.tree.map(jnp.sum, want_norms), 7)
  np.testing.assert_allclose(stats.m_coherence(), want.m_coherence(),
                             rtol=RTOL)
  assert int(stats.count) == 7


@pytest.mark.slow
def test_gpt_forms_match_vmap():
  loss_fn, params = cj.from_nnx(GPT(11, 8, 16, layers=2), next_token_loss)
  assert_forms_match_vmap(loss_fn, params, lm_batch(5, 8, 11),
                          (None, 'gram', 'materialize'), model_floor=1e-6)


# bfloat16 params and activations against float32 per-example gradients of the
# same (upcast) params. bf16 keeps 8 significant bits (unit roundoff 2^-9 ≈
# 2e-3); a 2-block forward and backward accumulate ~10 roundings per value, so
# a bf16 model's own gradients are a few % off the float32 ones. Measured:
# per-leaf relative Frobenius error ≤ 3.0 % for ghost (≤ 2.9 % for bf16 vmap
# gradients), per-example total ‖g‖² 0.8 % (0.7 %), the key bias (zero
# gradient in exact arithmetic) ≤ 2e-4 of the largest S entry. Tolerances:
# 10 % per leaf (norms, S), 5 % for the per-example total, 2e-2 for the key
# bias. Accumulating S or Q in bf16 instead would add ~√n·2e-3 per sum.
def _rel(got, want):
  return float(jnp.linalg.norm(jnp.ravel(got - want))
               / jnp.linalg.norm(jnp.ravel(want)))


@pytest.mark.slow
def test_bf16_gpt_matches_float32_vmap():
  loss16, params16 = cj.from_nnx(
      GPT(11, 8, 16, layers=2, dtype=jnp.bfloat16), next_token_loss)
  loss32, _ = cj.from_nnx(GPT(11, 8, 16, layers=2), next_token_loss)
  params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params16)
  batch = lm_batch(6, 8, 11)
  sums, norms = jax.jit(lambda p, b: ghost.sum_and_sq_norms(
      loss16, p, b, method='ghost'))(params16, batch)
  assert {x.dtype for x in jax.tree.leaves((sums, norms))} == {
      jnp.dtype(jnp.float32)}
  want_norms, want_sums = reference(loss32, params32, batch)
  total = lambda q: sum(jax.tree.leaves(q))
  assert _rel(total(norms), total(want_norms)) < 5e-2
  scale = max(float(jnp.max(jnp.abs(s))) for s in jax.tree.leaves(want_sums))
  for path, got in jax.tree_util.tree_leaves_with_path((norms, sums)):
    want = dict(jax.tree_util.tree_leaves_with_path((want_norms, want_sums)))[
        path]
    where = jax.tree_util.keystr(path)
    if 'key' in where and 'bias' in where:
      assert float(jnp.max(jnp.abs(got))) < 2e-2 * scale, where
    else:
      assert _rel(got, want) < 0.1, (where, _rel(got, want))


# ------------------------------------------------------------- what is left
class ScannedLayer(nnx.Module):
  """A Linear called inside jax.lax.scan: one trace, several executions."""

  def __init__(self):
    self.dense = nnx.Linear(3, 3, rngs=rngs())

  def __call__(self, x):
    def step(h, _):
      return jnp.tanh(self.dense(h)), None
    return jax.lax.scan(step, x, None, length=2)[0]


def test_unsupported_layer_is_listed_as_vmap():
  """(The numbers of the vmap fallback: test_ghost.py.)"""
  loss_fn, params = cj.from_nnx(nnx.eval_shape(ScannedLayer), smooth_loss)
  batch = {'x': jax.ShapeDtypeStruct((4, 3), jnp.float32)}
  with pytest.raises(ValueError, match=r'dense/kernel.*in a loop \(scan\)'):
    ghost.norm_paths(loss_fn, params, batch, method='ghost')
  assert ghost.norm_paths(loss_fn, params, batch) == {
      'dense/bias': 'vmap', 'dense/kernel': 'vmap'}


def test_norm_paths_forms_and_methods():
  class Mixed(nnx.Module):
    def __init__(self):
      self.embed = nnx.Embed(50, 4, rngs=rngs())
      self.wide = nnx.Linear(4, 64, rngs=rngs())    # T=3: Gram is cheaper
      self.head = nnx.Linear(64, 2, rngs=rngs())    # one position: outer
      self.unused = nnx.Linear(2, 2, rngs=rngs())

    def __call__(self, tokens):
      return self.head(jnp.mean(self.wide(self.embed(tokens)), 1))

  loss_fn, params = cj.from_nnx(nnx.eval_shape(Mixed), smooth_loss)
  batch = {'x': jax.ShapeDtypeStruct((2, 3), jnp.int32)}
  assert ghost.norm_paths(loss_fn, params, batch) == {
      'embed/embedding': 'ghost:gram', 'head/bias': 'ghost:materialize',
      'head/kernel': 'ghost:outer', 'unused/bias': 'ghost:unused',
      'unused/kernel': 'ghost:unused', 'wide/bias': 'ghost:materialize',
      'wide/kernel': 'ghost:gram'}
  forced = ghost.norm_paths(loss_fn, params, batch, ghost_form='materialize')
  assert forced['wide/kernel'] == forced['embed/embedding'] == (
      'ghost:materialize')
  assert set(ghost.norm_paths(loss_fn, params, batch,
                              method='vmap').values()) == {'vmap'}
