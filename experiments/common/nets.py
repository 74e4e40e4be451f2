"""Networks by `config.model.name` as pure functions, with per-example scoring.

`make(model_config, image_shape, num_classes, seed)` -> Net(loss_fn, params,
evaluate, score, accuracy): `loss_fn(params, batch) -> [B]` for training and
coherence, and a jitted `evaluate(params, images, labels) -> (correct [N]
bool, loss [N])` for accuracies and per-example records (when-learnt, easy /
hard), evaluated in chunks so a large split fits; `score` is the same
without chunking on any devices (streamed data, one chunk at a time,
sharded over the mesh), `accuracy` the jitted float32 fraction correct. 'mlp' initializes exactly like
`experiments.common.model.make_mlp` (same seed, same params).

'mlp' (config.model.widths) and 'cnn' (the small CNN) are built here; any
other name goes to the models-by-name registry of issue 11 §2
(`coherence_jax.models.registry.build`, norm resolved by
`experiments.common.model.resolve_norm`: GroupNorm for BatchNorm
architectures), with the config.model fields other than name / widths / norm
as the architecture's options (e.g. stem='cifar').

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

NAMES = ('mlp', 'cnn')
EVAL_CHUNK = 2048


class Net(NamedTuple):
  loss_fn: Callable[[Any, Any], jax.Array]  # (params, batch) -> [B] losses
  params: Any
  evaluate: Callable[[Any, Any, Any], Tuple[np.ndarray, np.ndarray]]
  # jitted (params, images, labels) -> (correct [B], loss [B]) device arrays,
  # on whatever devices / shardings the arguments have (no chunking).
  score: Optional[Callable[[Any, Any, Any], Tuple[jax.Array, jax.Array]]] = None
  # jitted (params, images, labels) -> the float32 fraction correct.
  accuracy: Optional[Callable[[Any, Any, Any], jax.Array]] = None


def _registry_names() -> Tuple[str, ...]:
  try:
    from coherence_jax.models import registry  # pylint: disable=g-import-not-at-top
  except ImportError:
    return ()
  return tuple(n for n in registry.NAMES if n not in NAMES)


def check_name(name: str) -> None:
  """ValueError naming config.model.name unless the experiments can build it."""
  if name not in NAMES + _registry_names():
    raise ValueError(f'config.model.name: got {name!r}; pass one of '
                     f'{NAMES + _registry_names()}.')


def _build_module(model_config: ml_collections.ConfigDict,
                  image_shape: Sequence[int], num_classes: int,
                  seed: int) -> nnx.Module:
  check_name(model_config.name)
  rngs = nnx.Rngs(seed)
  if model_config.name == 'mlp':
    return cj.models.MLP(list(model_config.widths), rngs=rngs)
  if model_config.name == 'cnn':
    return cj.models.CNN(num_classes=num_classes,
                         in_channels=image_shape[-1],
                         image_size=image_shape[0], rngs=rngs)
  # pylint: disable=g-import-not-at-top
  from coherence_jax.models import registry
  from experiments.common import model as model_lib
  options = {k: v for k, v in model_config.items()
             if k not in ('name', 'widths', 'norm')}
  return registry.build(
      model_config.name, num_classes=num_classes,
      input_shape=tuple(image_shape),
      norm=model_lib.resolve_norm(model_config.name,
                                  model_config.get('norm', model_lib.AUTO)),
      rngs=rngs, **options)


def _score(module, batch):
  logits = module(batch['image'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return correct, optax.softmax_cross_entropy_with_integer_labels(
      logits, batch['label'])


def _correct(module, batch):
  """As `experiments.common.model`'s: float32 1 / 0 per example."""
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
