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
from benchmarks.brought_models import GemmaLM
from benchmarks.brought_models import GemmaRMSNorm
from benchmarks.brought_models import PositionTableLM
from benchmarks.brought_models import ScaledEmbed
from benchmarks.brought_models import ScanLM
from benchmarks.brought_models import gemma_rms_sq_norms
from benchmarks.brought_models import lm_loss
from benchmarks.brought_models import next_token_logp
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


class PlainEmbed(nnx.Embed):
  """A subclass that overrides nothing: the parent's rule applies."""


def batch_token_count_loss(model, batch):
  """Gemma train.py's normalization: by the batch's count of non-pad tokens."""
  logp, keep = next_token_logp(model, batch)
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
  with pytest.raises(ValueError, match='module_type: expected an nnx.Module or flax.linen'):
    cj.register_ghost_rule(lambda x: x)


@pytest.mark.parametrize('kv_heads', [2, pytest.param(1, marks=pytest.mark.slow)])
def test_gemma_like_block_is_all_ghost_and_matches_vmap(kv_heads):
  """Fused qkv 'BTD,SNDH->SBTNH' (example axis second in the output),
  grouped-query kv 'BTD,CKDH->CBTKH', gated MLP 'BTD,GDF->GBTF', own
  RMSNorm, scaled embedding tied to the head, in both ghost forms."""
  loss_fn, params = cj.from_nnx(GemmaLM(kv_heads=kv_heads), lm_loss)
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
  loss_fn, params = cj.from_nnx(GemmaLM(), batch_token_count_loss)
  with pytest.raises(ValueError, match="batch's token count"):
    cj.coherence_stats(loss_fn, params, batch)
  loss_fn, params = cj.from_nnx(GemmaLM(), lm_loss)
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


@pytest.mark.parametrize('mode', ['scan_remat', 'remat_loop'])
def test_layers_under_nnx_scan_and_remat_are_ghost(mode):
  """Blocks stacked with nnx.vmap and run by nnx.scan (each under nnx.remat),
  or called through nnx.remat in a loop: the norms of a stacked param are the
  sum over the scan's iterations (its slices are distinct params)."""
  loss_fn, params = cj.from_nnx(ScanLM(layers=3, mode=mode), lm_loss)
  batch = padded_tokens()
  paths = cj.norm_paths(loss_fn, params, batch, method='ghost')
  assert 'vmap' not in paths.values(), paths
  assert_matches_vmap(loss_fn, params, batch, method='ghost')


@pytest.mark.slow  # the remat-free scan: test_layers_under_nnx_scan_and_remat
def test_layers_under_plain_nnx_scan_are_ghost():
  loss_fn, params = cj.from_nnx(ScanLM(layers=3, mode='scan'), lm_loss)
  assert_matches_vmap(loss_fn, params, padded_tokens(), method='ghost')


@pytest.mark.slow  # bf16 through the same paths as the float32 tests above
def test_bf16_scan_remat_and_own_modules_match_float32_vmap():
  """bfloat16 params through nnx.scan + nnx.remat (this call's bf16 slices)
  and the per-module fallback (ScaledEmbed, GemmaRMSNorm), against float32
  vmap gradients of the same upcast params. Tolerances as in
  test_ghost_sequence.test_bf16_gpt_matches_float32_vmap (bf16 keeps 8
  significant bits, ~10 roundings per value in a 2-block pass: a few %):
  10 % per leaf (relative Frobenius), 5 % for the per-example total."""
  for model in (ScanLM(layers=2, mode='scan_remat'), GemmaLM()):
    loss_fn, params32 = cj.from_nnx(model, lm_loss)
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params16)
    batch = padded_tokens()
    got = cj.per_example_sq_norms(loss_fn, params16, batch, method='ghost')
    want = cj.per_example_sq_norms(loss_fn, params32, batch, method='vmap')
    assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.float32)}
    rel = lambda a, b: float(jnp.linalg.norm(jnp.ravel(a - b))
                             / jnp.linalg.norm(jnp.ravel(b)))
    total = lambda q: sum(jax.tree.leaves(q))
    assert rel(total(got), total(want)) < 5e-2
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got),
                            jax.tree.leaves(want)):
      assert rel(g, w) < 0.1, jax.tree_util.keystr(path)
