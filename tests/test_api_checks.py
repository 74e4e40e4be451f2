"""Public functions: one compile per configuration, and bad input named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from tests import helpers


def test_coherence_stats_traces_once_for_same_shapes():
  traces = []
  base_loss, params = helpers.tiny_mlp()

  def loss_fn(p, b):
    traces.append(1)
    return base_loss(p, b)

  for seed in (1, 2):
    cj.coherence_stats(loss_fn, params, helpers.tiny_batch(6, seed=seed),
                       check_independence=False)
  first = len(traces)
  cj.coherence_stats(loss_fn, params, helpers.tiny_batch(6, seed=3),
                     check_independence=False)
  assert len(traces) == first  # the third call with same shapes: no trace
  assert first > 0


def test_ghost_form_is_part_of_the_cache_key():
  loss_fn, params = cj.from_nnx(
      nnx.Conv(2, 3, kernel_size=(3, 3), rngs=nnx.Rngs(0)),
      lambda m, b: jnp.sum(m(b['x']) ** 2, axis=(1, 2, 3)))
  batch = {'x': jax.random.normal(jax.random.key(0), (4, 6, 6, 2))}
  got = {form: cj.per_example_sq_norms(loss_fn, params, batch, ghost_form=form)
         for form in (None, 'gram', 'materialize')}
  ref = cj.per_example_sq_norms(loss_fn, params, batch, method='vmap')
  # Ghost forms and vmap reduce the same per-example norms differently: the
  # kernel's gradient entries sum 36 positions, its norm 54 squares, the Gram
  # form 36² products with cancellation. ~√n·EPS32 ≲ 1e-5; use 1e-4 relative,
  # with a floor of 1e-5 x the leaf's largest norm. A wrong form is O(1) off.
  for q in got.values():
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(b)))), q, ref)
  with pytest.raises(ValueError, match='ghost_form'):
    cj.per_example_sq_norms(loss_fn, params, batch, ghost_form='outer')


def test_integer_param_leaf_is_named():
  loss_fn, params = helpers.tiny_mlp()
  params = dict(params, step=jnp.zeros((), jnp.int32))
  loss = lambda p, b: loss_fn({'layers': p['layers']}, b)
  with pytest.raises(ValueError, match=r"params: leaf .*step.* int32"):
    cj.coherence_stats(loss, params, helpers.tiny_batch(4))


def test_empty_batch_is_a_value_error():
  loss_fn, params = helpers.tiny_mlp()
  empty = helpers.tiny_batch(0)
  with pytest.raises(ValueError, match='B = 0'):
    cj.per_group_grads(loss_fn, params, empty, 1)
  with pytest.raises(ValueError, match='B = 0'):
    cj.coherence_stats(loss_fn, params, empty)


def coupled_loss(params, batch):
  x = batch['image'] - batch['image'].mean(0)  # normalizes over the batch
  return jnp.sum((x @ params['w']) ** 2, -1)


def test_coupled_examples_are_detected():
  params = {'w': jnp.ones((12, 2))}
  batch = helpers.tiny_batch(4)
  with pytest.raises(ValueError, match='coupled'):
    cj.coherence_stats(coupled_loss, params, batch)
  with pytest.raises(ValueError, match='coupled'):
    cj.per_example_grads(coupled_loss, params, batch)
  # Opting out runs (the answer is then the user's responsibility).
  cj.coherence_stats(coupled_loss, params, batch, check_independence=False)


class TrainModeBatchNorm(nnx.Module):
  """use_running_average=False hard-coded: from_nnx's eval() cannot help."""

  def __init__(self):
    self.dense = nnx.Linear(12, 3, rngs=nnx.Rngs(0))
    self.norm = nnx.BatchNorm(3, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return self.norm(self.dense(x), use_running_average=False)


def test_hard_coded_train_mode_batchnorm_is_explained():
  loss_fn, params = cj.from_nnx(TrainModeBatchNorm(),
                                cj.models.cross_entropy_loss)
  with pytest.raises(ValueError, match='inference mode'):
    cj.coherence_stats(loss_fn, params, helpers.tiny_batch(4))
