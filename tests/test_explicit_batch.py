"""The public functions on a batch sharded over Explicit mesh axes (jax 0.10's
`jax.make_mesh` default) equal the same functions on the unsharded batch."""

import numpy as np
import pytest

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from coherence_jax import explicit_batch
from tests import helpers

D = 8  # simulated devices (tests/conftest.py)
# Sums over 16 examples (8 per-device partial sums, then a psum) against one
# sum: a few float32 roundings of each term, 16 * eps32 ~ 2e-6 relative.
RTOL = 1e-5


def _setup():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(2 * D)
  mesh = jax.make_mesh((D,), ('data',))   # Explicit axes
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  return loss_fn, params, batch, sharded


def _close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    y = np.asarray(y)
    np.testing.assert_allclose(np.asarray(x), y, rtol=RTOL,
                               atol=RTOL * float(np.abs(y).max()))


def test_batch_axes_reads_the_type():
  _, _, batch, sharded = _setup()
  assert explicit_batch.batch_axes(sharded) == ('data',)
  assert explicit_batch.batch_axes(batch) == ()


def test_coherence_stats_and_norms_equal_the_unsharded_batch():
  loss_fn, params, batch, sharded = _setup()
  want = cj.coherence_stats(loss_fn, params, batch)
  got = cj.coherence_stats(loss_fn, params, sharded)
  assert int(got.count) == 2 * D
  _close(got.m_coherence(), want.m_coherence())
  _close(got.sq_norm_of_sum(), want.sq_norm_of_sum())
  _close(got.sum_grads, want.sum_grads)
  # Inside the user's own jit too (the batch's type carries the sharding).
  inside = jax.jit(lambda p, b: cj.coherence_stats(loss_fn, p, b).alpha())
  _close(inside(params, sharded), want.alpha())
  _close(cj.per_example_sq_norms(loss_fn, params, sharded),
         cj.per_example_sq_norms(loss_fn, params, batch))


def test_per_example_grads_stay_sharded_like_the_batch():
  loss_fn, params, batch, sharded = _setup()
  got = cj.per_example_grads(loss_fn, params, sharded)
  _close(got, helpers.loop_grads(loss_fn, params, batch))
  leaf = jax.tree.leaves(got)[0]
  assert leaf.sharding.spec[0] == 'data', leaf.sharding


@pytest.mark.parametrize('fn', [cj.winsorized_mean_grad, cj.trimmed_mean_grad])
def test_robust_grads_equal_the_unsharded_batch(fn):
  loss_fn, params, batch, sharded = _setup()
  _close(fn(loss_fn, params, sharded, c=1, microbatch_size=1),
         fn(loss_fn, params, batch, c=1, microbatch_size=1))


def test_leaves_over_different_axes_name_the_fix():
  loss_fn, params, batch, _ = _setup()
  mesh = jax.make_mesh((2, 4), ('a', 'b'))
  mixed = {'image': jax.device_put(batch['image'],
                                   NamedSharding(mesh, P('a'))),
           'label': jax.device_put(batch['label'],
                                   NamedSharding(mesh, P('b')))}
  with pytest.raises(ValueError, match=r"batch: .*NamedSharding\(mesh, P"):
    cj.coherence_stats(loss_fn, params, mixed)
