"""Ghost norms equal per-example (vmap) gradients for every supported layer.

Tolerance: float32, rtol=1e-4 plus an absolute floor of 1e-5 × the largest
reference value of the leaf (sums of squares lose relative digits near 0).
Ghost and vmap reduce in different orders with different XLA:CPU kernels:
per-example gradient entries sum <= 81 positions, Gram forms sum <= 81²
products that cancel, S sums <= 24 examples. Round-to-nearest errors of such
sums are ~√n·EPS32 of the terms (≲ 1e-5); measured <= 3 % of this tolerance
with the default, SSE4.2-only and fast-math kernels. A wrong rule, a missing
example or a 2x error is O(1) off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import coherence_jax as cj
from coherence_jax import coherence
from coherence_jax import reductions
from coherence_jax.per_example import ghost
from coherence_jax.per_example.ghost import rules as ghost_rules

RTOL = 1e-4  # see the module docstring


# ------------------------------------------------------------------ helpers
def smooth_loss(model, batch):
  """A nonlinear per-example loss of any output shape, [B]."""
  out = model(batch['x'])
  return jnp.sum(jnp.sin(out) ** 2 + 0.1 * out, axis=tuple(range(1, out.ndim)))


class Stack(nnx.Module):
  """Applies its layers in order, with tanh between them."""

  def __init__(self, *layers):
    self.layers = nnx.List(layers)

  def __call__(self, x):
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i + 1 < len(self.layers):
        x = jnp.tanh(x)
    return x


def assert_close(got, want, where=''):
  got, want = np.asarray(got), np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=RTOL,
                             atol=1e-5 * np.max(np.abs(want)) + 1e-20,
                             err_msg=where)


def assert_trees_close(got, want, what):
  jax.tree_util.tree_map_with_path(
      lambda path, g, w: assert_close(g, w, what + jax.tree_util.keystr(path)),
      got, want)


def reference(loss_fn, params, batch):
  grads = cj.per_example_grads(loss_fn, params, batch)
  norms = jax.tree.map(reductions.per_example_sq_norm, grads)
  return norms, jax.tree.map(lambda g: g.sum(0), grads)


def ghost_outputs(loss_fn, params, batch, method='ghost', microbatch_size=None):
  """(per-example norms, stats) through the public traceable bodies."""
  fn = jax.jit(lambda p, b: (
      ghost.per_example_sq_norms(loss_fn, p, b, method=method,
                                 microbatch_size=microbatch_size),
      coherence.coherence_stats(loss_fn, p, b, microbatch_size=microbatch_size,
                                method=method)))
  return fn(params, batch)


def assert_matches_vmap(loss_fn, params, batch, method='ghost',
                        microbatch_size=None):
  """Norms and stats of `method` equal per-example vmap gradients."""
  norms, stats = ghost_outputs(loss_fn, params, batch, method, microbatch_size)
  want_norms, want_sums = reference(loss_fn, params, batch)
  assert_trees_close(norms, want_norms, 'norms')
  assert_trees_close(stats.sq_norms(),
                     jax.tree.map(jnp.sum, want_norms), 'Q')
  assert_trees_close(stats.sum_grads, want_sums, 'S')
  assert int(stats.count) == jax.tree.leaves(batch)[0].shape[0]


def assert_forms_match_vmap(loss_fn, params, batch, forms=(None,),
                            method='ghost'):
  """S and per-example norms with each forced form (one compile) equal vmap."""
  def every_form(p, b):
    out = []
    for form in forms:
      out.append(ghost.sum_and_sq_norms(loss_fn, p, b, method=method,
                                        ghost_form=form))
    return out
  got = jax.jit(every_form)(params, batch)
  want_norms, want_sums = reference(loss_fn, params, batch)
  for form, (sums, norms) in zip(forms, got):
    assert_trees_close(norms, want_norms, f'form={form} norms')
    assert_trees_close(sums, want_sums, f'form={form} S')


def normal_batch(shape, seed=0):
  return {'x': jax.random.normal(jax.random.key(seed), shape)}


def rngs():
  return nnx.Rngs(0)


# ------------------------------------------------------------ layer by layer
FORMS = ['gram', 'materialize']


@pytest.mark.parametrize('x_shape', [  # (5, 4): slow; T = 1 is test_mlp's
    pytest.param((5, 4), marks=pytest.mark.slow), (5, 2, 3, 4)])
def test_linear_with_position_axes(x_shape):
  model = Stack(nnx.Linear(4, 6, rngs=rngs()), nnx.Linear(6, 2, rngs=rngs()))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  assert_forms_match_vmap(loss_fn, params, normal_batch(x_shape), FORMS)


# Chained so one compile covers many configurations.
CONV_CHAINS = {
    '2d': ((4, 9, 9, 3), [
        dict(kernel_size=(3, 3), padding='SAME'),
        dict(kernel_size=(3, 3), strides=2, padding='VALID'),
        dict(kernel_size=(3, 2), strides=(2, 1), padding=((1, 0), (2, 1))),
        dict(kernel_size=(2, 2), padding=1, use_bias=False),
        dict(kernel_size=(3, 3), kernel_dilation=2, padding='SAME'),
        dict(kernel_size=(3, 3), input_dilation=2, padding=((1, 2), (0, 1))),
    ]),
    '1d': ((4, 11, 3), [
        dict(kernel_size=(3,), strides=2, padding='SAME'),
        dict(kernel_size=(2,), kernel_dilation=2, padding='VALID'),
        dict(kernel_size=(3,), padding='CAUSAL'),  # per-layer vmap
    ]),
    # per-layer per-example gradients rather than the Gram form:
    'circular_and_groups': ((4, 6, 6, 3), [
        dict(kernel_size=(3, 3), padding='CIRCULAR'),
        dict(kernel_size=(3, 3), feature_group_count=3, padding='SAME'),
    ]),
}


def conv_chain(configs, channels=3):
  return Stack(*[nnx.Conv(channels, channels, rngs=rngs(), **kwargs)
                 for kwargs in configs])


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in ('1d', '2d') else n
    for n in sorted(CONV_CHAINS)])
def test_conv(name):
  x_shape, configs = CONV_CHAINS[name]
  loss_fn, params = cj.from_nnx(conv_chain(configs), smooth_loss)
  assert_forms_match_vmap(loss_fn, params, normal_batch(x_shape), FORMS)


def test_embed_with_repeated_and_negative_tokens():
  model = Stack(nnx.Embed(7, 5, rngs=rngs()), nnx.Linear(5, 3, rngs=rngs()))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  tokens = jax.random.randint(jax.random.key(3), (6, 10), -2, 7)
  assert_forms_match_vmap(loss_fn, params, {'x': tokens}, FORMS)


def _random_batch_stats(model):
  for _, bn in nnx.iter_graph(model):
    if isinstance(bn, nnx.BatchNorm):
      key = jax.random.key(bn.num_features)
      bn.mean[...] = jax.random.normal(key, bn.mean.shape)
      bn.var[...] = 0.5 + jax.random.uniform(key, bn.var.shape)
  return model


def test_norm_layers():
  """LayerNorm (with/without bias), GroupNorm, RMSNorm, BatchNorm (eval)."""
  norms = [nnx.LayerNorm(6, rngs=rngs()),
           nnx.GroupNorm(6, num_groups=2, rngs=rngs()),
           nnx.RMSNorm(6, rngs=rngs()),
           nnx.BatchNorm(6, rngs=rngs()),
           nnx.LayerNorm(6, use_bias=False, rngs=rngs())]
  layers = [nnx.Linear(4, 6, rngs=rngs())]
  for norm in norms:
    layers += [norm, nnx.Linear(6, 6, rngs=rngs())]
  model = _random_batch_stats(Stack(*layers))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  # non-trivial scale and bias, so their gradients are not symmetric
  params = jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
      params)
  assert_forms_match_vmap(loss_fn, params, normal_batch((5, 3, 4)))


# ------------------------------------------------------------------- models
def image_batch(size, shape=(28, 28, 1), classes=10, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {'image': jax.random.normal(k1, (size,) + shape),
          'label': jax.random.randint(k2, (size,), 0, classes)}


@pytest.mark.slow  # test_coherence_stats_default_is_auto_and_matches_vmap: an MLP
def test_mlp():
  loss_fn, params = cj.from_nnx(cj.models.MLP([20, 16, 10], rngs=rngs()),
                                cj.models.cross_entropy_loss)
  assert_matches_vmap(loss_fn, params, image_batch(6, (4, 5, 1)))


@pytest.mark.slow  # the conv chains and test_mlp cover its layers
def test_cnn():
  """The benchmark CNN's layers on 8x8 inputs (28x28 only costs compile time)."""
  loss_fn, params = cj.from_nnx(cj.models.CNN(image_size=8, rngs=rngs()),
                                cj.models.cross_entropy_loss)
  assert_forms_match_vmap(loss_fn, params, image_batch(5, (8, 8, 1)),
                          [None, 'gram'])


class ResBlock(nnx.Module):
  """conv-norm-relu-conv-norm + skip, pooled, dense head."""

  def __init__(self, norm, channels=4, classes=3):
    self.stem = nnx.Conv(2, channels, (3, 3), padding='SAME', rngs=rngs())
    self.conv1 = nnx.Conv(channels, channels, (3, 3), padding='SAME',
                          use_bias=False, rngs=rngs())
    self.norm1 = norm(channels)
    self.conv2 = nnx.Conv(channels, channels, (3, 3), strides=2,
                          padding='SAME', use_bias=False, rngs=rngs())
    self.norm2 = norm(channels)
    self.skip = nnx.Conv(channels, channels, (1, 1), strides=2, rngs=rngs())
    self.head = nnx.Linear(channels, classes, rngs=rngs())

  def __call__(self, x):
    x = jax.nn.relu(self.stem(x))
    y = jax.nn.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    y = jax.nn.relu(y + self.skip(x))
    return self.head(jnp.mean(y, axis=(1, 2)))


@pytest.mark.parametrize('norm', [
    lambda c: nnx.GroupNorm(c, num_groups=2, rngs=rngs()),
    lambda c: nnx.BatchNorm(c, rngs=rngs()),
], ids=['group_norm', 'batch_norm_eval'])
@pytest.mark.slow  # test_norm_layers and the conv chains cover its layers
def test_resnet_block(norm):
  model = _random_batch_stats(ResBlock(norm))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  assert_forms_match_vmap(loss_fn, params, image_batch(4, (8, 8, 2), 3),
                          [None, 'gram'])


class TokenMixer(nnx.Module):
  """Embed + LayerNorm + token-mixing and channel Linear per position."""

  def __init__(self, vocab=11, length=6, dim=8, classes=3):
    self.embed = nnx.Embed(vocab, dim, rngs=rngs())
    self.norm = nnx.LayerNorm(dim, rngs=rngs())
    self.mix_tokens = nnx.Linear(length, length, rngs=rngs())
    self.mix_channels = nnx.Linear(dim, dim, rngs=rngs())
    self.head = nnx.Linear(dim, classes, rngs=rngs())

  def __call__(self, tokens):
    x = self.norm(self.embed(tokens))                      # [B, T, D]
    x = x + self.mix_tokens(x.swapaxes(1, 2)).swapaxes(1, 2)
    x = x + jax.nn.gelu(self.mix_channels(x))
    return self.head(jnp.mean(x, axis=1))


def token_batch(size, length=6, vocab=11, classes=3):
  k1, k2 = jax.random.split(jax.random.key(5))
  return {'image': jax.random.randint(k1, (size, length), 0, vocab),
          'label': jax.random.randint(k2, (size,), 0, classes)}


@pytest.mark.slow  # tests/test_ghost_sequence.py covers position axes
def test_token_mixing_block():
  loss_fn, params = cj.from_nnx(TokenMixer(), cj.models.cross_entropy_loss)
  assert_forms_match_vmap(loss_fn, params, token_batch(5), [None] + FORMS)


# ----------------------------------------------- micro-batches and devices
@pytest.mark.slow  # tests/test_coherence.py: micro-batches with remainders, auto = ghost
def test_microbatches_with_remainder():
  loss_fn, params = cj.from_nnx(cj.models.CNN(image_size=8, rngs=rngs()),
                                cj.models.cross_entropy_loss)
  assert_matches_vmap(loss_fn, params, image_batch(7, (8, 8, 1)),
                      microbatch_size=3)


@pytest.mark.slow  # tests/test_sharding.py runs ghost (auto) under shard_map
def test_shard_map_equals_one_device():
  model = _random_batch_stats(ResBlock(lambda c: nnx.BatchNorm(c, rngs=rngs())))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  batch = image_batch(8 * 3, (8, 8, 2), 3)
  want = cj.coherence_stats(loss_fn, params, batch, method='ghost')
  want_norms = cj.per_example_sq_norms(loss_fn, params, batch, method='ghost')
  mesh = jax.make_mesh((8,), ('data',))
  sharded = jax.device_put(batch, NamedSharding(mesh, P('data')))
  fn = jax.jit(jax.shard_map(
      lambda p, b: (
          cj.coherence_stats(loss_fn, p, b, axis_name='data', method='ghost',
                             microbatch_size=2),
          cj.per_example_sq_norms(loss_fn, p, b, axis_name='data',
                                  method='ghost')),
      mesh=mesh, in_specs=(P(), P('data')), out_specs=(P(), P('data'))))
  got, got_norms = fn(params, sharded)
  assert int(got.count) == 24
  # psum of 8 partial sums vs one device: same terms, other order.
  jax.tree.map(assert_close, (got.sum_grads, got.sq_norms(), got_norms),
               (want.sum_grads, want.sq_norms(), want_norms))


def test_coherence_stats_default_is_auto_and_matches_vmap():
  loss_fn, params = cj.from_nnx(cj.models.MLP([20, 16, 10], rngs=rngs()),
                                cj.models.cross_entropy_loss)
  batch = image_batch(6, (20,))
  got = cj.coherence_stats(loss_fn, params, batch)
  want = cj.coherence_stats(loss_fn, params, batch, method='vmap')
  np.testing.assert_allclose(got.m_coherence(), want.m_coherence(), rtol=RTOL)
  with pytest.raises(ValueError, match='method'):
    cj.coherence_stats(loss_fn, params, batch, method='ghosts')


# ------------------------------------------------------------------ errors
class Tempered(nnx.Module):
  """A raw param read by a module that also holds a layer."""

  def __init__(self):
    self.dense = nnx.Linear(4, 3, rngs=rngs())
    self.temperature = nnx.Param(jnp.asarray(1.5))

  def __call__(self, x):
    return self.dense(x) / self.temperature[...]


class ReadsKernel(nnx.Module):
  """A Linear whose kernel is also read directly (outside its call)."""

  def __init__(self):
    self.dense = nnx.Linear(4, 4, rngs=rngs())

  def __call__(self, x):
    return self.dense(x) + x @ self.dense.kernel[...].T


class Scanned(nnx.Module):
  """One Linear applied in jax.lax.scan: traced once, run twice."""

  def __init__(self):
    self.dense = nnx.Linear(4, 4, rngs=rngs())

  def __call__(self, x):
    step = lambda h, _: (jnp.tanh(self.dense(h)), None)
    return jax.lax.scan(step, x, None, length=2)[0]


# Weight tying via Embed.attend and layers called several times are handled
# (tests/test_ghost_sequence.py); these are not.
UNSUPPORTED = {
    'param_beside_layers': (Tempered, (5, 4),
                            r"temperature: module '<root>' of type Tempered"
                            r'.*also holds layers'),
    'kernel_read_directly': (ReadsKernel, (5, 4),
                             r'dense/kernel.*used outside'),
    'layer_in_scan': (Scanned, (5, 4),
                      r'dense/kernel.*in a loop \(scan\) with the same params'),
}


@pytest.mark.parametrize('name', sorted(UNSUPPORTED))
def test_unsupported_layer_ghost_names_it_and_auto_falls_back(name):
  make, x_shape, message = UNSUPPORTED[name]
  loss_fn, params = cj.from_nnx(make(), smooth_loss)
  batch = ({'x': jax.random.randint(jax.random.key(0), (5, 6), 0, 7)}
           if x_shape is None else normal_batch(x_shape))
  with pytest.raises(ValueError, match=message):
    cj.per_example_sq_norms(loss_fn, params, batch, method='ghost')
  assert_forms_match_vmap(loss_fn, params, batch, method='auto')


def test_not_nnx_loss_fn():
  loss_fn = lambda w, b: jnp.tanh(b['x'] @ w) ** 2
  w = jnp.linspace(-1.0, 1.0, 3)
  batch = normal_batch((6, 3))
  with pytest.raises(ValueError, match='from_nnx'):
    cj.coherence_stats(loss_fn, w, batch, method='ghost')
  with pytest.raises(ValueError, match='from_nnx'):
    cj.per_example_sq_norms(loss_fn, w, batch, method='ghost')
  norms, stats = ghost_outputs(loss_fn, w, batch, method='auto')
  want_norms, want_sum = reference(loss_fn, w, batch)
  assert_close(norms, want_norms)
  assert_close(stats.sum_grads, want_sum)


def test_choose_form_cost_model():
  assert ghost_rules.choose_form(1, 784, 128) == 'outer'
  assert ghost_rules.choose_form(49, 4608, 512) == 'gram'
  assert ghost_rules.choose_form(196, 288, 64) == 'materialize'
  assert ghost_rules.choose_form(49, 4608, 512, gram_ok=False) == 'materialize'
  # Materialized per-example gradients replace the batch gradient: only their
  # traffic (MATERIALIZE_COST = 16 multiply-adds per entry) counts against
  # the Gram form's T²(K + N). Square 128-wide layers: Gram up to T = 32.
  assert ghost_rules.choose_form(32, 128, 128) == 'gram'
  assert ghost_rules.choose_form(33, 128, 128) == 'materialize'
  assert ghost_rules.choose_form(50, 128, 512) == 'materialize'  # ViT MLP


@pytest.mark.slow  # test_microbatches_with_remainder covers the remainder
def test_example_chunks_with_remainder(monkeypatch):
  """Materialized grads are formed a few examples at a time (lax.map + tail)."""
  # conv: 3 chunks of 2 examples + 1
  monkeypatch.setattr(ghost_rules, '_CHUNK_FLOATS', 2000)
  model = Stack(nnx.Conv(3, 4, (3, 3), strides=2, padding='SAME', rngs=rngs()),
                nnx.Linear(4, 3, rngs=rngs()))
  loss_fn, params = cj.from_nnx(model, smooth_loss)
  assert_forms_match_vmap(loss_fn, params, normal_batch((7, 9, 9, 3)), FORMS)
