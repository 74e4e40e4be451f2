"""Config checks shared by the experiments: fail before any work, name the field.

Each check raises ValueError('config.<field>: got <value>; <fix>').

Example:
  >>> check(config.train.epochs >= 1, 'train.epochs', config.train.epochs,
  ...       'pass an integer >= 1')
"""

import math
from typing import Any

import ml_collections

from experiments.common import data


def check(ok: bool, field: str, got: Any, fix: str) -> None:
  """Raises ValueError('config.<field>: got <got>; <fix>.') unless `ok`."""
  if not ok:
    raise ValueError(f'config.{field}: got {got!r}; {fix}.')


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def positive_int(config: ml_collections.ConfigDict, field: str,
                 minimum: int = 1) -> None:
  """config.<field> (dotted) is an int >= minimum."""
  value = _get(config, field)
  check(_is_int(value) and value >= minimum, field, value,
        f'pass an integer >= {minimum}, e.g. --config.{field}={max(minimum, 1)}')


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  for name in field.split('.'):
    config = config[name]
  return config


def check_common(config: ml_collections.ConfigDict, train_size: int,
                 input_size: int, num_classes: int = data.NUM_CLASSES
                 ) -> None:
  """The fields both experiments share: seed, data, model, train.

  Args:
    config: the experiment config.
    train_size: examples in the training set (N).
    input_size: values per input image (784 for MNIST).
    num_classes: the dataset's classes.

  config.model.name defaults to 'mlp', whose config.model.widths are
  checked; other names (`experiments.common.nets`) take no widths.
  """
  data.check_name(config.data.name)
  positive_int(config, 'seed', minimum=0)
  name = config.model.get('name', 'mlp')
  from experiments.common import nets  # pylint: disable=g-import-not-at-top
  nets.check_name(name)
  if name == 'mlp':
    widths = tuple(config.model.widths)
    check(len(widths) >= 2 and all(_is_int(w) and w >= 1 for w in widths),
          'model.widths', widths, 'pass positive integers (input, '
          f'hidden..., output), e.g. ({input_size}, 2048, {num_classes})')
    check(widths[0] == input_size, 'model.widths', widths,
          f'the first width must be the {input_size} input pixels of '
          f'{config.data.name}')
    check(widths[-1] == num_classes, 'model.widths', widths,
          f'the last width must be the {num_classes} classes')
  lr = config.train.learning_rate
  check(isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0,
        'train.learning_rate', lr, 'pass a finite number > 0, e.g. 0.1')
  positive_int(config, 'train.epochs')
  positive_int(config, 'train.checkpoint_every_epochs')
  batch_size = config.train.batch_size
  check(_is_int(batch_size) and 1 <= batch_size <= train_size,
        'train.batch_size', batch_size,
        f'pass 1..{train_size} (the training set size)')
  check_mesh(config)


def check_mesh(config: ml_collections.ConfigDict) -> None:
  """config.mesh.data: -1 (every device) or 1..jax.device_count()."""
  import jax  # pylint: disable=g-import-not-at-top
  mesh = config.get('mesh')
  value = None if mesh is None else mesh.get('data')
  total = jax.device_count()
  check(_is_int(value) and (value == -1 or 1 <= value <= total), 'mesh.data',
        value, f'pass -1 (every device) or 1..{total} (devices of the '
        "'data' axis)")
  check(jax.process_count() == 1 or value in (-1, total), 'mesh.data', value,
        f'pass -1: all {jax.process_count()} processes must take part')


def check_sample_size(config: ml_collections.ConfigDict, field: str,
                      train_size: int) -> None:
  """config.<field>, a measurement sample size, is in 1..train_size."""
  value = _get(config, field)
  check(_is_int(value) and 1 <= value <= train_size, field, value,
        f'pass 1..{train_size} (at most the training set size)')
