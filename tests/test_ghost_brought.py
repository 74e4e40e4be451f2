"""Ghost norms on layers nobody here wrote: own modules, subclasses, registered
rules, any einsum layout, and a coupled language-model loss refused.

Each case is compared with per-example vmap gradients at the tolerance of
tests/test_ghost.py (float32, rtol 1e-4 plus 1e-5 × the leaf's largest value:
the two paths sum ≤ 100 products in different orders, ~√n·EPS32 ≲ 1e-5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from coherence_jax.per_example import ghost
from tests.test_ghost import Stack
from tests.test_ghost import assert_forms_match_vmap
from tests.test_ghost import assert_matches_vmap
from tests.test_ghost import normal_batch
from tests.test_ghost import rngs
from tests.test_ghost import smooth_loss


class Scale(nnx.Module):
  """A module of one's own: a param used in an arbitrary way."""

  def __init__(self, dim):
    self.w = nnx.Param(jnp.linspace(0.5, 1.5, dim))

  def __call__(self, x):
    return x * self.w[...] ** 2 + jnp.sin(self.w[...])


class GemmaRMSNorm(nnx.Module):
  """Gemma's RMSNorm: its own class, scale used as (1 + scale)."""

  def __init__(self, dim):
    self.scale = nnx.Param(jnp.linspace(-0.2, 0.3, dim))

  def __call__(self, x):
    var = jnp.mean(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + 1e-6) * (1 + self.scale[...])


def gemma_rms_sq_norms(module, params, x, dz):
  del module, params
  normed = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
  g = (dz * normed).reshape(x.shape[0], -1, x.shape[-1]).sum(1)
  return {'scale': (g * g).sum(-1)}


class ScaledEmbed(nnx.Embed):
  """Gemma's embedder: the lookup times √features, in its own __call__."""

  def __call__(self, inputs):
    return super().__call__(inputs) * jnp.sqrt(float(self.features))


class PlainEmbed(nnx.Embed):
  """A subclass that overrides nothing: the parent's rule applies."""


class GemmaLikeLM(nnx.Module):
  """Scaled embedding, own RMSNorm, fused qkv 'BTD,SNDH->SBTNH' or
  grouped-query q 'BTD,NDH->BTNH' with kv 'BTD,CKDH->CBTKH', tied head."""

  def __init__(self, vocab=13, dim=8, heads=2, kv_heads=2, head_dim=4):
    r = rngs()
    self.heads, self.kv_heads = heads, kv_heads
    self.embed = ScaledEmbed(vocab, dim, rngs=r)
    self.pre_norm = GemmaRMSNorm(dim)
    if kv_heads == heads:
      self.qkv = nnx.Einsum('BTD,SNDH->SBTNH', (3, heads, dim, head_dim),
                            rngs=r)
    else:
      self.q = nnx.Einsum('BTD,NDH->BTNH', (heads, dim, head_dim), rngs=r)
      self.kv = nnx.Einsum('BTD,CKDH->CBTKH', (2, kv_heads, dim, head_dim),
                           rngs=r)
    self.out = nnx.Einsum('BTNH,NHD->BTD', (heads, head_dim, dim), rngs=r)
    self.final_norm = GemmaRMSNorm(dim)

  def __call__(self, tokens):
    x = self.embed(tokens)
    h = self.pre_norm(x)
    if self.kv_heads == self.heads:
      q, k, v = self.qkv(h)
    else:
      q = self.q(h)
      k, v = self.kv(h)
      rep = self.heads // self.kv_heads
      k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k) / 2.0
    mask = jnp.tril(jnp.ones((tokens.shape[1],) * 2, bool))
    att = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1)
    x = x + self.out(jnp.einsum('bnts,bsnh->btnh', att, v))
    return self.embed.attend(self.final_norm(x))


def lm_loss(model, batch):
  """Per-example next-token loss, each example normalized by its own count."""
  tokens = batch['tokens']
  logits = model(tokens[:, :-1])
  target = tokens[:, 1:]
  keep = target != 0
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None],
                             -1)[..., 0]
  return -jnp.sum(logp * keep, -1) / jnp.maximum(jnp.sum(keep, -1), 1)


def batch_token_count_loss(model, batch):
  """Gemma train.py's normalization: by the batch's count of non-pad tokens."""
  tokens = batch['tokens']
  logits = model(tokens[:, :-1])
  target = tokens[:, 1:]
  keep = target != 0
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None],
                             -1)[..., 0]
  return -jnp.sum(logp * keep, -1) / jnp.sum(keep)


def padded_tokens(batch=4, length=7, vocab=13, seed=0):
  tokens = np.array(jax.random.randint(jax.random.key(seed), (batch, length),
                                       1, vocab))
  tokens[0, 5:] = 0
  tokens[1, 3:] = 0
  return {'tokens': jnp.asarray(tokens)}


def test_module_of_ones_own_takes_per_module_fallback_in_the_ghost_pass():
  loss_fn, params = cj.from_nnx(Stack(nnx.Linear(4, 3, rngs=rngs()), Scale(3)),
                                smooth_loss)
  batch = normal_batch((5, 4))
  paths = cj.norm_paths(loss_fn, params, batch, method='ghost')
  assert paths['layers/1/w'] == 'ghost:module'
  assert 'vmap' not in paths.values()
  assert_matches_vmap(loss_fn, params, batch, method='ghost')


def test_subclass_overriding_call_is_not_given_the_parents_rule():
  # nnx.Embed's lookup rule on ScaledEmbed would give Q at 1/features of its
  # true value (0.125 at 8 features): the override must take the fallback.
  model = Stack(ScaledEmbed(7, 8, rngs=rngs()), nnx.Linear(8, 2, rngs=rngs()))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  batch = {'x': jax.random.randint(jax.random.key(0), (5, 6), 0, 7)}
  assert cj.norm_paths(loss_fn, params, batch)['layers/0/embedding'] == (
      'ghost:module')
  assert_matches_vmap(loss_fn, params, batch, method='ghost')
  plain = Stack(PlainEmbed(7, 8, rngs=rngs()), nnx.Linear(8, 2, rngs=rngs()))
  loss_fn, params = cj.from_nnx(plain, smooth_loss)
  assert cj.norm_paths(loss_fn, params, batch)['layers/0/embedding'] in (
      'ghost:gram', 'ghost:materialize')
  assert_matches_vmap(loss_fn, params, batch, method='ghost')


def test_registered_rule_is_used_and_checked():
  model = Stack(nnx.Linear(4, 6, rngs=rngs()), GemmaRMSNorm(6))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  batch = normal_batch((5, 3, 4))
  cj.register_ghost_rule(GemmaRMSNorm, gemma_rms_sq_norms)
  try:
    assert cj.norm_paths(loss_fn, params, batch)['layers/1/scale'] == (
        'ghost:registered')
    assert_matches_vmap(loss_fn, params, batch, method='ghost')
    cj.register_ghost_rule(GemmaRMSNorm, lambda m, p, x, dz: {})
    with pytest.raises(ValueError, match=r"GemmaRMSNorm returned norms for "
                       r"\[\], not for \['scale'\]"):
      cj.per_example_sq_norms(loss_fn, params, batch, method='ghost')
  finally:
    cj.unregister_ghost_rule(GemmaRMSNorm)
  assert cj.norm_paths(loss_fn, params, batch)['layers/1/scale'] == (
      'ghost:module')
  with pytest.raises(ValueError, match='module_type: expected an nnx.Module'):
    cj.register_ghost_rule(lambda x: x)


@pytest.mark.parametrize('kv_heads', [2, 1])
def test_gemma_like_block_is_all_ghost_and_matches_vmap(kv_heads):
  """Fused qkv 'BTD,SNDH->SBTNH' (example axis second in the output) and
  grouped-query kv 'BTD,CKDH->CBTKH', in both ghost forms."""
  loss_fn, params = cj.from_nnx(GemmaLikeLM(kv_heads=kv_heads), lm_loss)
  batch = padded_tokens()
  paths = cj.norm_paths(loss_fn, params, batch, method='ghost')
  assert 'vmap' not in paths.values(), paths
  assert_forms_match_vmap(loss_fn, params, batch, ['gram', 'materialize'])
  stats = cj.coherence_stats(loss_fn, params, batch)
  want = cj.coherence_stats(loss_fn, params, batch, method='vmap')
  np.testing.assert_allclose(stats.m_coherence(), want.m_coherence(),
                             rtol=1e-4)


def test_einsum_with_moved_example_axis_called_twice():
  """The reuse path (zero perturbations of each call's output) with the
  example axis second in the einsum's output."""

  class Twice(nnx.Module):

    def __init__(self):
      self.e = nnx.Einsum('BTD,SDH->SBTH', (2, 4, 4), rngs=rngs())

    def __call__(self, x):
      a, b = self.e(x)
      c, d = self.e(jnp.tanh(a * b))
      return c + d

  loss_fn, params = cj.from_nnx(Twice(), smooth_loss)
  assert_forms_match_vmap(loss_fn, params, normal_batch((5, 3, 4)),
                          ['gram', 'materialize'])


def test_loss_normalized_by_the_batch_token_count_is_refused():
  """Integer-only batches are probed too: example 1's padding is changed."""
  batch = padded_tokens()
  loss_fn, params = cj.from_nnx(GemmaLikeLM(), batch_token_count_loss)
  with pytest.raises(ValueError, match="batch's token count"):
    cj.coherence_stats(loss_fn, params, batch)
  loss_fn, params = cj.from_nnx(GemmaLikeLM(), lm_loss)
  assert int(cj.coherence_stats(loss_fn, params, batch).count) == 4


def test_unsupported_error_is_one_line_per_cause():
  class TwoRaw(nnx.Module):

    def __init__(self):
      self.dense = nnx.Linear(4, 3, rngs=rngs())
      self.a = nnx.Param(jnp.ones(3))
      self.b = nnx.Param(jnp.ones(3))

    def __call__(self, x):
      return self.dense(x) * self.a[...] + self.b[...]

  loss_fn, params = cj.from_nnx(TwoRaw(), smooth_loss)
  with pytest.raises(ValueError) as err:
    cj.per_example_sq_norms(loss_fn, params, normal_batch((5, 4)),
                            method='ghost')
  lines = str(err.value).splitlines()
  assert lines[1].strip().startswith('a, b: module')
  assert 'register_ghost_rule' in str(err.value)


class PositionTableLM(nnx.Module):
  """GPT-style: a raw nnx.Param position table added in the root module."""

  def __init__(self, vocab=13, dim=8, length=16):
    self.embed = nnx.Embed(vocab, dim, rngs=rngs())
    self.position = nnx.Param(0.1 * jnp.ones((length, dim)))
    self.mlp = nnx.Linear(dim, dim, rngs=rngs())

  def __call__(self, tokens):
    x = self.embed(tokens) + self.position[...][:tokens.shape[1]]
    return self.embed.attend(jnp.tanh(self.mlp(x)))


def test_auto_takes_one_vmap_pass_where_ghost_plus_vmap_would_cost_more():
  """A param outside every module rule needs a whole-model vmap pass; with
  16 positions, adding every param to that pass (per-example traffic) costs
  less than a ghost pass on top, so auto computes all by vmap."""
  loss_fn, params = cj.from_nnx(PositionTableLM(), lm_loss)
  batch = padded_tokens(length=17)
  assert set(cj.norm_paths(loss_fn, params, batch).values()) == {'vmap'}
  assert_forms_match_vmap(loss_fn, params, batch, method='auto')
  # One position (an MLP-like layer): the ghost pass stays.
  from tests.test_ghost import Tempered
  loss_fn, params = cj.from_nnx(Tempered(), smooth_loss)
  paths = cj.norm_paths(loss_fn, params, normal_batch((5, 4)))
  assert paths['dense/kernel'] == 'ghost:outer'
  assert paths['temperature'] == 'vmap'
