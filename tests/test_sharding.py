"""sharded_coherence_stats equals one device: any B, 1-D and 2-D meshes, processes."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from coherence_jax import aggregators
from coherence_jax import sharding
from tests import helpers
from tests import multiprocess_worker as worker

# Same per-example math on each device; only the order of float32 sums over
# <= 16 examples and the psum differ: ~1e-6 relative, 1e-5 leaves headroom.
RTOL = 1e-5


def assert_same(got, want):
  assert int(got.count) == int(want.count)
  np.testing.assert_allclose(float(got.m_coherence()),
                             float(want.m_coherence()), rtol=RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=RTOL, atol=1e-6 * float(np.max(np.abs(b)))),
               (got.sum_grads, got.sq_norms()), (want.sum_grads,
                                                 want.sq_norms()))


@pytest.mark.parametrize('size', [  # 13: padded to 16 on 8 devices
    pytest.param(3, marks=pytest.mark.slow), 13,
    pytest.param(16, marks=pytest.mark.slow)])
@pytest.mark.parametrize('mesh_shape,names', [((8,), ('data',)),
                                              ((2, 4), ('host', 'data'))])
def test_equals_one_device_for_any_batch_size(size, mesh_shape, names):
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(size)
  want = cj.coherence_stats(loss_fn, params, batch)
  mesh = jax.make_mesh(mesh_shape, names)
  for method in ('auto', 'vmap'):
    got = sharding.sharded_coherence_stats(loss_fn, params, batch, mesh,
                                           method=method, microbatch_size=2)
    assert_same(got, want)


def test_padding_is_not_counted_and_contributes_nothing():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(5)
  mesh = jax.make_mesh((8,), ('data',))
  got = sharding.sharded_coherence_stats(loss_fn, params, batch, mesh)
  assert int(got.count) == 5  # 3 padded examples of weight 0
  assert_same(got, cj.coherence_stats(loss_fn, params, batch))


def test_batch_over_one_axis_of_a_2d_mesh():
  loss_fn, params = helpers.tiny_mlp()
  batch = helpers.tiny_batch(6)
  mesh = jax.make_mesh((2, 4), ('model', 'data'))
  got = sharding.sharded_coherence_stats(loss_fn, params, batch, mesh,
                                         batch_axes=('data',))
  assert_same(got, cj.coherence_stats(loss_fn, params, batch))


class _Tokens(nnx.Module):
  """Embedding lookup (a gather, which fails on a batch sharded over an
  Explicit axis outside shard_map) and a Linear over 3 positions."""

  def __init__(self):
    self.embed = nnx.Embed(7, 4, rngs=nnx.Rngs(0))
    self.dense = nnx.Linear(4, 3, rngs=nnx.Rngs(1))

  def __call__(self, tokens):
    return jnp.mean(self.dense(jnp.tanh(self.embed(tokens))), 1)


def _token_loss(model, batch):
  logp = jax.nn.log_softmax(model(batch['tokens']))
  return -jnp.take_along_axis(logp, batch['label'][:, None], 1)[:, 0]


@pytest.mark.parametrize('method', ['ghost',
                                    pytest.param('vmap', marks=pytest.mark.slow)])
def test_explicit_axes_batch_equals_one_device(method):
  """A batch already sharded over an Explicit mesh axis (jax.make_mesh's
  default): the same statistics as on one device."""
  # Params and data made on the host (no initializer or op-by-op compiles).
  loss_fn, shapes = cj.from_nnx(nnx.eval_shape(_Tokens), _token_loss)
  rng = np.random.default_rng(2)
  params = jax.tree.map(
      lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
  host = {'tokens': rng.integers(0, 7, (8, 3), np.int32),
          'label': rng.integers(0, 3, (8,), np.int32)}
  mesh = jax.make_mesh((8,), ('data',))
  assert mesh.axis_types == (jax.sharding.AxisType.Explicit,)
  batch = jax.device_put(host, jax.sharding.NamedSharding(mesh, P('data')))
  want = jax.device_get(cj.coherence_stats(loss_fn, params, host,
                                           method=method))
  got = jax.device_get(sharding.sharded_coherence_stats(
      loss_fn, params, batch, mesh, method=method))
  # Each device computes its example's gradient and norms with the float32
  # operations the single device applies to all 8 (sums over <= 3 positions
  # and <= 4 features); S is a psum of 8 per-device terms instead of one sum
  # of 8: its entries differ by a few ulps of the largest gradient entry
  # (an entry that cancels to ~0 only to that absolute level), Q per leaf (a
  # sum of 8 positive per-example norms) by ~8·eps32 ≈ 1e-6 relative; RTOL =
  # 1e-5 leaves room for different kernel blocking. S and Q per leaf fix
  # every ratio (α, m-coherence).
  assert int(got.count) == 8
  scale = max(np.max(np.abs(g)) for g in jax.tree.leaves(want.sum_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=RTOL, atol=1e-6 * scale), got.sum_grads, want.sum_grads)
  q = lambda stats: jax.tree.map(lambda v: v * stats.scale**2,
                                 stats.scaled_sq_norms)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL),
               q(got), q(want))


def test_unknown_batch_axis_is_named():
  loss_fn, params = helpers.tiny_mlp()
  mesh = jax.make_mesh((8,), ('data',))
  with pytest.raises(ValueError, match="batch_axes.*'data'"):
    sharding.sharded_coherence_stats(loss_fn, params, helpers.tiny_batch(4),
                                     mesh, batch_axes=('batch',))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _one_process_training(loss_fn, params):
  """The worker's training steps on one device (no mesh)."""
  from experiments.common import aggregator_specs  # pylint: disable=g-import-not-at-top
  from experiments.common import train_step  # pylint: disable=g-import-not-at-top
  grad_fn, optimizer = aggregator_specs.build(worker.TRAIN_SPEC, loss_fn,
                                              learning_rate=0.1)
  trainer = train_step.make_trainer(grad_fn, optimizer)
  state = trainer.init(params)
  for step in range(worker.TRAIN_STEPS):
    state, _ = trainer.step(state, worker.train_batch(step))
  return worker.flat(state['params'])


def test_two_processes_equal_one():
  """2 processes × 4 CPU devices (gloo) = one process: coherence stats (each
  process loading only its slice), one winsorized update with axis_name, and
  3 data-parallel training steps with a per-example aggregator."""
  port = str(_free_port())
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS='')
  cmd = [sys.executable, '-m', 'tests.multiprocess_worker', port]
  procs = [subprocess.Popen(cmd + [str(i)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  results = {}
  for out, _ in outs:
    for line in out.splitlines():
      if line.startswith('RESULT'):
        _, name, process, value = line.split(' ', 3)
        results[name, int(process)] = json.loads(value)
  assert sorted(results) == [(name, i) for name in
                             ('coherence', 'training', 'winsorized')
                             for i in (0, 1)]
  loss_fn, params = helpers.tiny_mlp()
  want = cj.coherence_stats(loss_fn, params, helpers.tiny_batch(13))
  grads, _ = worker.winsorized_inputs()
  tx = aggregators.winsorized_mean(1)
  update = tx.update(grads, tx.init(params), params)[0]
  training = _one_process_training(loss_fn, params)
  for i in (0, 1):
    count, m_coherence = results['coherence', i]
    assert count == 13
    np.testing.assert_allclose(m_coherence, float(want.m_coherence()),
                               rtol=RTOL)
    # A psum of 8 partial sums of <= 16 float32 values against one pass:
    # ~16·eps32 relative to the largest gradient value.
    np.testing.assert_allclose(results['winsorized', i], worker.flat(update),
                               rtol=RTOL, atol=1e-6)
    # 3 SGD steps (lr 0.1) on those updates; params are O(1).
    np.testing.assert_allclose(results['training', i], training, rtol=RTOL,
                               atol=1e-6)
