"""Networks by `config.model.name` as pure functions, with per-example scoring.

`make(model_config, image_shape, num_classes, seed)` -> Net(loss_fn, params,
evaluate, score, accuracy): `loss_fn(params, batch) -> [B]` for training and
coherence, a jitted `evaluate(params, images, labels) -> (correct [N] bool,
loss [N])` in chunks (accuracies and per-example records), `score` the same
without chunking on any devices, and `accuracy` the jitted fraction correct.

Every model comes from the models registry (`coherence_jax.models.build`):
'mlp' takes config.model.widths (input, hidden..., classes); the other
config.model fields but name / widths / norm are the architecture's options
(e.g. stem='cifar'). The norm is resolved by `resolve_norm`: GroupNorm where
the architecture's usual norm is BatchNorm, because `from_nnx` runs the model
in inference mode and the trainer keeps no BatchNorm statistics.

Example:
  >>> net = make(config.model, (28, 28, 1), 10, seed=0)
  >>> correct, loss = net.evaluate(net.params, images, labels)
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import nnx
import ml_collections
import numpy as np
import optax

import coherence_jax as cj
from coherence_jax.models import registry

NAMES = registry.NAMES
EVAL_CHUNK = 2048
AUTO = 'auto'
# The names whose usual norm is BatchNorm; under norm='auto' they get 'group'.
_BATCH_NORM_NAMES = ('resnet18', 'resnet50', 'vgg11_bn', 'vgg13_bn',
                     'vgg16_bn')


class Net(NamedTuple):
  loss_fn: Callable[[Any, Any], jax.Array]  # (params, batch) -> [B] losses
  params: Any
  evaluate: Callable[[Any, Any, Any], Tuple[np.ndarray, np.ndarray]]
  # jitted (params, images, labels) -> (correct [B], loss [B]) device arrays,
  # on whatever devices / shardings the arguments have (no chunking).
  score: Optional[Callable[[Any, Any, Any], Tuple[jax.Array, jax.Array]]] = None
  # jitted (params, images, labels) -> the float32 fraction correct.
  accuracy: Optional[Callable[[Any, Any, Any], jax.Array]] = None


def check_name(name: str) -> None:
  """ValueError naming config.model.name unless the registry has it."""
  if name not in NAMES:
    raise ValueError(f'config.model.name: got {name!r}; pass one of {NAMES}.')


def resolve_norm(name: str, norm: Optional[str] = AUTO) -> Optional[str]:
  """The norm passed to `coherence_jax.models.build` for model `name`.

  Args:
    name: one of `NAMES`.
    norm: 'auto' (GroupNorm where the usual norm is BatchNorm), 'group',
      None or 'default' (the architecture's own, if not BatchNorm).

  Raises:
    ValueError: norm 'batch' (or 'default' on a BatchNorm architecture), or
      an unknown norm.

  Example:
    >>> resolve_norm('resnet18')
    'group'
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


def _build_module(model_config: ml_collections.ConfigDict,
                  image_shape: Sequence[int], num_classes: int,
                  seed: int) -> nnx.Module:
  name = model_config.name
  check_name(name)
  options = {k: v for k, v in model_config.items()
             if k not in ('name', 'widths', 'norm')}
  if name == 'mlp':
    options['hidden'] = tuple(model_config.widths)[1:-1]
  return registry.build(
      name, num_classes=num_classes, input_shape=tuple(image_shape),
      norm=resolve_norm(name, model_config.get('norm', AUTO)),
      rngs=nnx.Rngs(seed), **options)


def _score(module, batch):
  logits = module(batch['image'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return correct, optax.softmax_cross_entropy_with_integer_labels(
      logits, batch['label'])


def _correct(module, batch):
  """Float32 1 / 0 per example."""
  return (jnp.argmax(module(batch['image']), -1) == batch['label']).astype(
      jnp.float32)


def make(model_config: ml_collections.ConfigDict, image_shape: Sequence[int],
         num_classes: int, seed: int) -> Net:
  """The network of `model_config`, initialized from `seed`.

  Args:
    model_config: config.model ('name', and 'widths' for 'mlp').
    image_shape: one example's image shape, e.g. (28, 28, 1).
    num_classes: output classes.
    seed: the initialization seed.

  Returns:
    Net(loss_fn, params, evaluate).

  Raises:
    ValueError: an unknown config.model.name (the valid ones are listed).
  """
  module = _build_module(model_config, image_shape, num_classes, seed)
  loss_fn, params = cj.from_nnx(module, cj.models.cross_entropy_loss)
  score_fn, _ = cj.from_nnx(module, _score)
  score = jax.jit(lambda p, images, labels: score_fn(
      p, {'image': images, 'label': labels}))
  correct_fn, _ = cj.from_nnx(module, _correct)
  accuracy = jax.jit(lambda p, images, labels: jnp.mean(correct_fn(
      p, {'image': images, 'label': labels})))

  def evaluate(params, images, labels):
    correct, loss = [], []
    for i in range(0, len(labels), EVAL_CHUNK):
      c, l = score(params, images[i:i + EVAL_CHUNK], labels[i:i + EVAL_CHUNK])
      correct.append(c)
      loss.append(l)
    return (np.concatenate(jax.device_get(correct)),
            np.concatenate(jax.device_get(loss)))

  return Net(loss_fn, params, evaluate, score, accuracy)
