"""The experiments' models as (loss_fn, params) plus a jitted accuracy.

`make_model(name, ...)` builds any model of `coherence_jax.models.NAMES`
(`coherence_jax.models.build`); `make_mlp(widths, seed)` is the MLP the first
experiments use (same params as `make_model('mlp', ...)` with those widths).

Normalization in the experiments. `loss_fn` comes from `cj.from_nnx`, which
runs the model in inference mode: the trainer (train_step.py) and the
coherence measurements both call it. That is exact for models without
batch-dependent layers — mlp, cnn, plain VGG, and GroupNorm ResNets/VGGs,
whose examples are independent in every mode. BatchNorm in inference mode
normalizes with running statistics that only a train-mode step updates; the
trainer has none, so a BatchNorm model would train with its initial
statistics (mean 0, variance 1: no normalization at all). Hence `norm='auto'`
(the default) gives GroupNorm (32 groups) wherever the architecture's usual
norm is BatchNorm (resnet18, resnet50, vgg*_bn), and `norm='batch'` is
refused until a trainer carries batch statistics. Per-example gradients with
BatchNorm are well defined only in inference mode in any case (train-mode
BatchNorm couples the examples of a batch; `check_independence` catches it).

Example:
  >>> model = make_mlp((784, 2048, 10), seed=0)
  >>> model.accuracy(model.params, images, labels)   # a device scalar
  >>> net = make_model('resnet18', num_classes=10, input_shape=(32, 32, 3),
  ...                  seed=0)                       # GroupNorm, CIFAR stem
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj
from coherence_jax.models import registry

AUTO = 'auto'
# The names whose usual norm is BatchNorm; under norm='auto' they get 'group'.
_BATCH_NORM_NAMES = ('resnet18', 'resnet50', 'vgg11_bn', 'vgg13_bn',
                     'vgg16_bn')


class Model(NamedTuple):
  loss_fn: Callable[[Any, Any], jax.Array]   # (params, batch) -> [B] losses
  params: Any
  accuracy: Callable[[Any, jax.Array, jax.Array], jax.Array]


def _correct(model: nnx.Module, batch) -> jax.Array:
  return (jnp.argmax(model(batch['image']), -1) == batch['label']).astype(
      jnp.float32)


def _from_module(module: nnx.Module) -> Model:
  loss_fn, params = cj.from_nnx(module, cj.models.cross_entropy_loss)
  correct_fn, _ = cj.from_nnx(module, _correct)

  @jax.jit
  def accuracy(params, images, labels):
    return jnp.mean(correct_fn(params, {'image': images, 'label': labels}))

  return Model(loss_fn, params, accuracy)


def make_mlp(widths: Sequence[int], seed: int) -> Model:
  """A ReLU MLP with cross-entropy loss, initialized from `seed`.

  Args:
    widths: input, hidden..., output sizes, e.g. (784, 2048, 10).
    seed: the initialization seed.

  Returns:
    Model(loss_fn, params, accuracy(params, images, labels) -> fraction).
  """
  return _from_module(cj.models.MLP(list(widths), rngs=nnx.Rngs(seed)))


def resolve_norm(name: str, norm: Optional[str] = AUTO) -> Optional[str]:
  """The norm `make_model` uses for model `name` (see the module doc).

  Args:
    name: one of `coherence_jax.models.NAMES`.
    norm: 'auto', 'group', None or 'default' (the architecture's own, which
      must not be BatchNorm here).

  Returns:
    The `norm` to pass to `coherence_jax.models.build`.

  Raises:
    ValueError: norm 'batch' (or 'default' on a BatchNorm architecture), or
      an unknown norm.
  """
  if norm == AUTO:
    return 'group' if name in _BATCH_NORM_NAMES else registry.DEFAULT
  if norm == 'batch' or (norm == registry.DEFAULT
                         and name in _BATCH_NORM_NAMES):
    raise ValueError(
        f'config.model.norm: got {norm!r} for {name!r}; the experiments run '
        'the model in inference mode (from_nnx) and their trainer keeps no '
        'BatchNorm statistics, so BatchNorm would never normalize. Pass '
        "'group' (or 'auto': GroupNorm) or None.")
  if norm not in ('group', None, registry.DEFAULT):
    raise ValueError(f'config.model.norm: got {norm!r}; pass one of '
                     f"{(AUTO, 'group', None)}.")
  return norm


def make_model(name: str, *, num_classes: int, input_shape: Sequence[int],
               seed: int, norm: Optional[str] = AUTO, **kwargs: Any) -> Model:
  """Any registry model as Model(loss_fn, params, accuracy).

  Args:
    name: one of `coherence_jax.models.NAMES` (e.g. config.model.name).
    num_classes: output logits (`data.num_classes(config.data.name)`).
    input_shape: one example's (height, width, channels).
    seed: the initialization seed.
    norm: 'auto' (GroupNorm in place of BatchNorm), 'group' or None.
    **kwargs: the architecture's options (`coherence_jax.models.build`),
      e.g. hidden=(2048,) for 'mlp', stem='imagenet' for 'resnet18'.

  Returns:
    Model(loss_fn, params, accuracy(params, images, labels) -> fraction);
    `loss_fn` runs the model in inference mode (per-example independent).

  Raises:
    ValueError: unknown name or option (listing the valid ones), or a
      BatchNorm choice (see `resolve_norm`).
  """
  module = registry.build(name, num_classes=num_classes,
                          input_shape=tuple(input_shape),
                          norm=resolve_norm(name, norm), rngs=nnx.Rngs(seed),
                          **kwargs)
  return _from_module(module)
