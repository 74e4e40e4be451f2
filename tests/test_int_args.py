"""Integer arguments share one check (`_checks.is_int`).

Numpy integers (read from an array or a config) are ints; True / False (and
np.bool_) are not, though Python counts them as ints. Before, the check was
written ~12 ways: winsorized_mean / Transformer / ViT refused np.int64, and
model input shapes, max_pool windows and measurement seeds took True.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from coherence_jax import _checks
from coherence_jax.data import measurement
from coherence_jax.models import pooling
from tests import helpers


def test_is_int():
  for value in (0, 3, np.int8(3), np.int64(-2), np.uint32(7)):
    assert _checks.is_int(value), value
  for value in (True, False, np.bool_(True), 2.0, np.float32(2), '2', None,
                np.array(2)):
    assert not _checks.is_int(value), value


def test_numpy_integers_build_models():
  shapes = nnx.eval_shape(lambda: cj.models.Transformer(
      np.int64(11), np.int64(16), np.int64(2), np.int64(1), np.int64(5),
      rngs=nnx.Rngs(0)))
  assert shapes.embed.embedding.shape == (11, 16)
  vit = nnx.eval_shape(lambda: cj.models.ViT(
      np.int64(3), image_size=np.int64(8), patch_size=(np.int32(4), 4),
      d_model=np.int64(16), num_heads=2, num_layers=1, rngs=nnx.Rngs(0)))
  assert vit.head.kernel.shape == (16, 3)


def test_bools_are_refused_where_they_slipped_through():
  with pytest.raises(ValueError, match='input_shape: got'):
    cj.models.build('mlp', num_classes=3, input_shape=(True,),
                    rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='max_pool: window'):
    pooling.max_pool(jnp.ones((1, 4, 4, 1)), (True, True))
  with pytest.raises(ValueError, match='seed: got True'):
    measurement.measurement_sets(seed=True, train_size=10, test_size=10,
                                 sample_size=4, held_out_size=4)
  with pytest.raises(ValueError, match='microbatch_size'):
    _checks.check_microbatch_size(np.bool_(True))
  _checks.check_microbatch_size(np.int64(4))
  assert jax.tree.leaves(measurement.measurement_sets(
      seed=np.int64(1), train_size=np.int64(10), test_size=10, sample_size=4,
      held_out_size=4))


def test_numpy_integers_in_the_core_api():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(10)
  got = cj.coherence_stats(loss_fn, params, batch, method='vmap',
                           microbatch_size=np.int64(4))
  want = cj.coherence_stats(loss_fn, params, batch, method='vmap',
                            microbatch_size=4)
  # The same program on the same chunks: bit-identical.
  assert float(got.m_coherence()) == float(want.m_coherence())
  # winsorized_mean_grad shares check_c / check_microbatch_size (bit-equal
  # results with np.int64 were checked by hand; its compile is ~15 s).
  _checks.check_c(np.int64(2), 'winsorized_mean_grad')
