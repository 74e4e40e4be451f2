"""models.Transformer and models.ViT: shapes, causality, weight tying, parameter
counts against closed forms, and coherence_stats (vmap) against a Python loop
of jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from coherence_jax.models import losses
from coherence_jax.models.transformer import Transformer
from coherence_jax.models.transformer import causal_mask
from coherence_jax.models.transformer import param_count
from coherence_jax.models.vit import ViT
from coherence_jax.models.vit import vit_param_count


def _num_params(make) -> int:
  model = nnx.eval_shape(make)
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _gpt_closed_form(v, d, heads, layers, max_len, ratio, tied):
  """Written out independently of the module: q, k, v, out kernels d·d with
  biases (heads × d/heads = d each, out d), two LayerNorms (2d each), MLP
  d→ratio·d→d with biases, embeddings V·d and max_len·d, final LayerNorm 2d,
  untied head V·d (no bias)."""
  del heads  # the head split does not change the count
  h = ratio * d
  attention = 4 * (d * d + d)
  mlp = d * h + h + h * d + d
  block = attention + mlp + 2 * (2 * d)
  return v * d + max_len * d + layers * block + 2 * d + (0 if tied else v * d)


@pytest.mark.parametrize('v,d,heads,layers,max_len,ratio', [
    (7, 8, 2, 2, 6, 4), (98, 128, 4, 1, 3, 2)])
def test_transformer_param_count_matches_closed_form(v, d, heads, layers,
                                                     max_len, ratio):
  for tied in (True, False):
    got = _num_params(lambda: Transformer(
        v, d, heads, layers, max_len, mlp_ratio=ratio, tie_embeddings=tied,
        rngs=nnx.Rngs(0)))
    want = _gpt_closed_form(v, d, heads, layers, max_len, ratio, tied)
    assert got == want == param_count(v, d, layers, max_len, ratio, tied)
  # Tying removes exactly the V × d head kernel: the head IS the embedding.
  assert (_gpt_closed_form(v, d, heads, layers, max_len, ratio, False)
          - _gpt_closed_form(v, d, heads, layers, max_len, ratio, True)
          == v * d)


def test_tied_model_has_no_head_and_untied_one_does():
  tied = nnx.eval_shape(lambda: Transformer(7, 8, 2, 1, 4, rngs=nnx.Rngs(0)))
  untied = nnx.eval_shape(lambda: Transformer(7, 8, 2, 1, 4,
                                              tie_embeddings=False,
                                              rngs=nnx.Rngs(0)))
  tied_params = nnx.to_pure_dict(nnx.state(tied, nnx.Param))
  untied_params = nnx.to_pure_dict(nnx.state(untied, nnx.Param))
  assert 'head' not in tied_params
  assert untied_params['head']['kernel'].shape == (8, 7)
  assert 'bias' not in untied_params['head']


def test_transformer_shapes_causality_and_tied_head():
  """One compiled program (model built inside) answers three questions."""
  v, d, t = 7, 8, 5
  base = np.array([[1, 2, 3, 4, 5], [6, 0, 1, 2, 3]], np.int32)
  changed = base.copy()
  changed[:, 3] = (changed[:, 3] + 1) % v     # change token t = 3 only

  @jax.jit
  def run(tokens):
    model = Transformer(v, d, 2, 2, 6, rngs=nnx.Rngs(0))
    # The forward pass written out, ending in h · Eᵀ (the tied head).
    x = model.embed(tokens) + model.pos_embed(
        jnp.broadcast_to(jnp.arange(t), tokens.shape))
    for block in model.blocks:
      x = block(x, mask=causal_mask(t))
    by_hand = model.final_norm(x) @ model.embed.embedding[...].T
    return model(tokens), by_hand

  logits, by_hand = map(np.asarray, run(np.concatenate([base, changed])))
  assert logits.shape == (4, t, v) and logits.dtype == np.float32
  before, after = logits[:2], logits[2:]
  # Causal: positions 0..2 never see token 3. Masked attention weights are
  # exactly 0 after the softmax (exp underflows), so the values are equal
  # bit for bit, not only close.
  np.testing.assert_array_equal(before[:, :3], after[:, :3])
  assert np.all(np.abs(before[:, 3:] - after[:, 3:]).max(axis=-1) > 1e-6)
  # Tied: the head is the token embedding (Embed.attend = h · Eᵀ). Same
  # products, possibly another dot kernel: float32 rounding of a d = 8 term
  # dot product of O(1) values (~8 · 2⁻²⁴ relative) -> 1e-5.
  np.testing.assert_allclose(logits, by_hand, rtol=1e-5, atol=1e-6)


def test_transformer_rejects_too_long_and_bad_sizes():
  model = nnx.eval_shape(lambda: Transformer(7, 8, 2, 1, 4, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r'tokens: got shape \(1, 5\)'):
    model(jnp.zeros((1, 5), jnp.int32))
  with pytest.raises(ValueError, match='num_heads: got 3'):
    Transformer(7, 8, 3, 1, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='max_len: got 0'):
    Transformer(7, 8, 2, 1, 0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('kwargs,h,w', [
    (dict(num_classes=10), 28, 28),
    (dict(num_classes=5, image_size=(12, 8), patch_size=4, in_channels=3,
          d_model=16, num_heads=2, num_layers=1, mlp_ratio=2, pool='mean'),
     12, 8)])
def test_vit_shapes_and_param_count(kwargs, h, w):
  make = lambda: ViT(**kwargs, rngs=nnx.Rngs(0))
  c = kwargs.get('in_channels', 1)
  out = jax.eval_shape(lambda x: make()(x),
                       jax.ShapeDtypeStruct((3, h, w, c), jnp.float32))
  assert out.shape == (3, kwargs['num_classes'])
  # Closed form, written out: patch conv P²·C·d + d, positions (N + cls)·d,
  # CLS row d, blocks as the GPT blocks, final LayerNorm 2d, head d·K + K.
  p = kwargs.get('patch_size', 7)
  d, k = kwargs.get('d_model', 64), kwargs['num_classes']
  ratio, layers = kwargs.get('mlp_ratio', 4), kwargs.get('num_layers', 2)
  cls = int(kwargs.get('pool', 'cls') == 'cls')
  patches = (h // p) * (w // p)
  block = 4 * (d * d + d) + 2 * ratio * d * d + ratio * d + d + 4 * d
  want = (p * p * c * d + d + (patches + cls) * d + cls * d + layers * block
          + 2 * d + d * k + k)
  assert _num_params(make) == want == vit_param_count(
      k, (h, w), p, c, d, layers, ratio, kwargs.get('pool', 'cls'))


def test_vit_rejects_bad_patch_pool_and_images():
  with pytest.raises(ValueError, match='patch_size: got 5'):
    ViT(10, patch_size=5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='pool: got'):
    ViT(10, pool='max', rngs=nnx.Rngs(0))
  vit = nnx.eval_shape(lambda: ViT(10, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r'images: got shape \(2, 28, 28\)'):
    vit(jnp.zeros((2, 28, 28)))


def _loop_m_coherence(loss_fn, params, batch):
  """m-coherence from a Python loop of jax.grad, one example at a time."""
  size = jax.tree.leaves(batch)[0].shape[0]
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(p, b)[0]))
  flat = []
  for i in range(size):
    g = grad(params, jax.tree.map(lambda x, i=i: x[i:i + 1], batch))
    flat.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
                .astype(np.float64))
  flat = np.stack(flat)
  return (flat.sum(0) @ flat.sum(0)) / np.sum(flat * flat)


@pytest.mark.slow  # ~3 compiles per model: ~15 s of CPU each
@pytest.mark.parametrize('name', ['transformer', 'vit'])
def test_coherence_stats_vmap_runs_and_matches_a_loop(name):
  rng = np.random.default_rng(0)
  if name == 'transformer':
    model = Transformer(11, 8, 2, 1, 6, rngs=nnx.Rngs(0))
    loss = losses.next_token_loss
    batch = {'tokens': jnp.asarray(rng.integers(0, 11, (4, 6)), jnp.int32)}
  else:
    model = ViT(3, image_size=8, patch_size=4, d_model=8, num_heads=2,
                num_layers=1, rngs=nnx.Rngs(0))
    loss = losses.cross_entropy_loss
    batch = {'image': jnp.asarray(rng.standard_normal((4, 8, 8, 1)),
                                  jnp.float32),
             'label': jnp.asarray([0, 1, 2, 1], jnp.int32)}
  loss_fn, params = cj.from_nnx(model, loss)
  stats = cj.coherence_stats(loss_fn, params, batch, method='vmap')
  assert int(stats.count) == 4
  got = float(stats.m_coherence())
  assert 0.0 < got <= 4.0
  # Sums of 4 per-example gradients in float32 against float64: a few
  # float32 roundings of the sums (~4 · 2⁻²⁴ each) -> 1e-5 relative.
  np.testing.assert_allclose(got, _loop_m_coherence(loss_fn, params, batch),
                             rtol=1e-5)
