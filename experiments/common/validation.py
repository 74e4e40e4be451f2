"""Config checks shared by the experiments: fail before any work, name the field.

Each check raises ValueError('config.<field>: got <value>; <fix>').

Example:
  >>> check(config.train.epochs >= 1, 'train.epochs', config.train.epochs,
  ...       'pass an integer >= 1')
"""

from typing import Any

import ml_collections

from coherence_jax import _checks


def check(ok: bool, field: str, got: Any, fix: str) -> None:
  """Raises ValueError('config.<field>: got <got>; <fix>.') unless `ok`."""
  if not ok:
    raise ValueError(f'config.{field}: got {got!r}; {fix}.')


def positive_int(config: ml_collections.ConfigDict, field: str,
                 minimum: int = 1) -> None:
  """config.<field> (dotted) is an int >= minimum."""
  value = _get(config, field)
  check(_checks.is_int(value) and value >= minimum, field, value,
        f'pass an integer >= {minimum}, e.g. --config.{field}={max(minimum, 1)}')


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  for name in field.split('.'):
    config = config[name]
  return config


def check_mesh(config: ml_collections.ConfigDict) -> None:
  """config.mesh.data: -1 (every device) or 1..jax.device_count()."""
  import jax  # pylint: disable=g-import-not-at-top
  mesh = config.get('mesh')
  value = None if mesh is None else mesh.get('data')
  total = jax.device_count()
  check(_checks.is_int(value) and (value == -1 or 1 <= value <= total), 'mesh.data',
        value, f'pass -1 (every device) or 1..{total} (devices of the '
        "'data' axis)")
  check(jax.process_count() == 1 or value in (-1, total), 'mesh.data', value,
        f'pass -1: all {jax.process_count()} processes must take part')
