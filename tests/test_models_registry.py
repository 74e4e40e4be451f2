"""Models by name: parameter counts of the usual definitions (via eval_shape,
nothing allocated), stems, heads, norms, errors that list the valid names."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coherence_jax as cj
from coherence_jax import models
from coherence_jax.models import registry
from coherence_jax.models import vgg

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)


def count(name, num_classes, input_shape, **kwargs):
  module = nnx.eval_shape(lambda: models.build(
      name, num_classes=num_classes, input_shape=input_shape,
      rngs=nnx.Rngs(0), **kwargs))
  return models.num_params(module), module


# torchvision's published parameter counts (torchvision.models weights
# tables, `sum(p.numel() for p in model.parameters())`), and the CIFAR
# ResNet-18 of kuangliu/pytorch-cifar (the benchmarks' PyTorch twin). The
# other VGGs follow from the closed form below, which reproduces these.
@pytest.mark.parametrize('name,num_classes,shape,norm,want', [
    ('resnet50', 1000, IMAGENET, 'default', 25_557_032),
    ('vgg13_bn', 1000, IMAGENET, 'default', 133_053_736),
    ('vgg16', 1000, IMAGENET, 'default', 138_357_544),
])
def test_param_counts_match_the_usual_definitions(name, num_classes, shape,
                                                  norm, want):
  assert count(name, num_classes, shape, norm=norm)[0] == want


def test_resnet18_stem_follows_the_input_size_and_counts_match():
  n_small, small = count('resnet18', 10, CIFAR, norm='group')
  n_large, large = count('resnet18', 1000, IMAGENET)
  assert n_small == 11_173_962 and n_large == 11_689_512  # see above
  assert small.stem_conv.kernel.shape == (3, 3, 3, 64) and not small.stem_pool
  assert large.stem_conv.kernel.shape == (7, 7, 3, 64) and large.stem_pool
  _, forced = count('resnet18', 10, CIFAR, stem='imagenet', widths=(4,) * 4,
                    groups=4)
  assert forced.stem_pool


def test_vgg_counts_follow_the_closed_form():
  """Every depth against sum(9·cin·cout + cout) + BatchNorm + head."""
  for depth, config in vgg.CONFIGS.items():
    convs, cin = 0, 3
    for width in (c for c in config if c != 'M'):
      convs, cin = convs + 9 * cin * width + width, width
    bn = 2 * sum(c for c in config if c != 'M')  # scale + bias per channel
    imagenet_head = (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (
        4096 * 1000 + 1000)
    assert count(f'vgg{depth}_bn', 1000, IMAGENET)[0] == (
        convs + bn + imagenet_head)
    assert count(f'vgg{depth}', 10, CIFAR)[0] == convs + 512 * 10 + 10


def test_mlp_and_cnn_by_name():
  n, _ = count('mlp', 10, (28, 28, 1), hidden=(256, 256, 256))
  assert n == (784 * 256 + 256) + 2 * (256 * 256 + 256) + (256 * 10 + 10)
  assert count('mlp', 10, (28, 28, 1))[0] == 1_628_170  # 784-2048-10
  assert count('cnn', 10, (28, 28, 1))[0] == 421_642
  # 32x32x3: the conv1 kernel sees 3 channels; 8x8x64 features.
  assert count('cnn', 100, CIFAR)[0] == (
      (27 * 32 + 32) + (288 * 64 + 64) + (8 * 8 * 64 * 128 + 128) +
      (128 * 100 + 100))


@pytest.mark.parametrize('name,norm,layer', [
    ('resnet18', 'default', nnx.BatchNorm), ('resnet50', 'group', nnx.GroupNorm),
    ('vgg11_bn', 'default', nnx.BatchNorm), ('vgg11', 'group', nnx.GroupNorm),
    ('vgg11', 'default', None)])
def test_norm_choice(name, norm, layer):
  small = {'widths': (4,) * 4, 'groups': 4} if 'resnet' in name else {}
  _, module = count(name, 10, CIFAR, norm=norm, **small)
  found = {type(m) for _, m in nnx.iter_graph(module)
           if isinstance(m, (nnx.BatchNorm, nnx.GroupNorm))}
  assert found == ({layer} if layer else set())


def test_group_norm_resnet18_is_the_benchmarks_resnet18gn():
  _, built = count('resnet18', 10, CIFAR, norm='group')
  legacy = nnx.eval_shape(lambda: models.ResNet18GN(rngs=nnx.Rngs(0)))
  a, b = nnx.to_pure_dict(nnx.state(built)), nnx.to_pure_dict(
      nnx.state(legacy))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert [x.shape for x in jax.tree.leaves(a)] == [
      x.shape for x in jax.tree.leaves(b)]


def _initialized(make):
  """The module `make()` with numpy-drawn params (kernels N(0, 1/fan_in)).

  Flax's random init compiles a threefry program per initializer, ~20 s of
  CPU for a ResNet-18; these tests need only some non-trivial weights.
  """
  graphdef, state = nnx.split(nnx.eval_shape(make))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = getattr(path[-1], 'key', None)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name == 'mean':
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = math.prod(leaf.shape[:-1]) if name == 'kernel' else 100
    return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(fan_in),
                       leaf.dtype)

  values = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, values)
  return nnx.merge(graphdef, state)


def test_small_forward_pass_is_per_example_in_inference_mode():
  """A small BatchNorm ResNet with the ImageNet stem (resnet18's code path,
  one block per stage, two stages): example 0's logits do not move when
  example 1 does (from_nnx: BatchNorm running statistics)."""
  net = _initialized(lambda: models.ResNet(
      5, block='basic', blocks=(1, 1), widths=(4, 8), stem='imagenet',
      norm='batch', rngs=nnx.Rngs(0)))
  loss_fn, params = cj.from_nnx(net, models.cross_entropy_loss)
  logits = jax.jit(lambda p, x: loss_fn.model(p)(x))
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  moved = x.at[1].multiply(3.0).at[1].add(1.0)
  a, b = logits(params, x), logits(params, moved)
  assert a.shape == (2, 5) and bool(jnp.all(jnp.isfinite(a)))
  # The same program on the same example 0: bit-identical unless the batch
  # couples the examples (then example 0 moves at O(1)).
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.allclose(a[1], b[1])


def test_vgg_heads_give_logits_at_any_size_from_32():
  for head, size in (('imagenet', 32), ('cifar', 48)):
    out = jax.eval_shape(
        lambda x, head=head: vgg.VGG(7, config=(8, 'M') * 5, head=head,
                                     rngs=nnx.Rngs(0))(x),
        jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32))
    assert out.shape == (3, 7)


def test_adaptive_avg_pool_matches_torch_rule():
  x = np.random.default_rng(0).standard_normal((2, 5, 3, 2)).astype(np.float32)
  got = np.asarray(vgg.adaptive_avg_pool(jnp.asarray(x), (7, 7)))
  want = np.zeros((2, 7, 7, 2), np.float32)
  for i in range(7):  # torch: start floor(i*n/m), end ceil((i+1)*n/m)
    for j in range(7):
      rows = slice(i * 5 // 7, math.ceil((i + 1) * 5 / 7))
      cols = slice(j * 3 // 7, math.ceil((j + 1) * 3 / 7))
      want[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
  # Means of <= 2 float32 values: exact up to one rounding.
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError) as info:
    models.build('resnet101', num_classes=10, input_shape=CIFAR,
                 rngs=nnx.Rngs(0))
  message = str(info.value)
  assert "name: got 'resnet101'" in message
  for name in registry.NAMES:
    assert repr(name) in message


@pytest.mark.parametrize('name,kwargs,match', [
    ('resnet18', dict(hidden=(10,)), r"hidden: not an option of 'resnet18'; "
     r"its options are \('stem', 'groups', 'widths'\)"),
    ('mlp', dict(norm='batch'), r"norm: got 'batch'; mlp has no norm"),
    ('vgg11_bn', dict(norm=None), r"'vgg11_bn'.*name 'vgg11' for no norm"),
    ('resnet18', dict(norm='layer'), r"norm: got 'layer'"),
    ('cnn', dict(input_shape=(28, 30, 1)), r'square'),
    ('resnet18', dict(input_shape=(32, 32)), r'input_shape: got \(32, 32\)'),
    ('resnet18', dict(num_classes=0), r'num_classes: got 0'),
])
def test_bad_arguments_are_named(name, kwargs, match):
  args = dict(num_classes=10, input_shape=CIFAR, rngs=nnx.Rngs(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    models.build(name, **args)


def test_sequence_and_vit_models_by_name():
  """Counts from the formulas in models/transformer.py and models/vit.py."""
  from coherence_jax.models import transformer, vit  # pylint: disable=g-import-not-at-top,g-multiple-import
  gpt = nnx.eval_shape(lambda: models.build(
      'transformer', num_classes=50, input_shape=(16,), rngs=nnx.Rngs(0)))
  # (V + T)·d + L·block + 2d = 66·128 + 2·198,272 + 256, tied head.
  assert models.num_params(gpt) == 405_248 == transformer.param_count(
      50, 128, 2, 16, 4, True)
  vit_model = nnx.eval_shape(lambda: models.build(
      'vit', num_classes=10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0)))
  assert models.num_params(vit_model) == 105_098 == vit.vit_param_count(10)
  with pytest.raises(ValueError, match=r'input_shape: got \(16, 16, 1\)'):
    models.build('transformer', num_classes=50, input_shape=(16, 16, 1),
                 rngs=nnx.Rngs(0))
