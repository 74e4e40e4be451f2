"""`config.json` of a workdir: saved at the first start, compared at every start.

Resuming (or re-running a finished) workdir with a different config would mix
two experiments under one name, so it is refused with the differing fields,
unless the config sets `allow_config_change=True` (then the new config is saved
and the change logged).

Example:
  >>> check_and_save(config, '/tmp/rvr')  # ValueError if /tmp/rvr has another
"""

import json
import os
from typing import Any, Dict, List

from absl import logging
import ml_collections

from experiments.common import files

FILENAME = 'config.json'
OVERRIDE = 'allow_config_change'
# Fields that change where a run computes, not what: a run may resume on
# another number of devices (results equal up to float32 summation order).
PLACEMENT_PREFIXES = ('mesh.', 'data.num_threads')


def flatten(tree: Any, prefix: str = '') -> Dict[str, Any]:
  """Dotted names -> leaf values of nested dicts.

  >>> flatten({'train': {'lr': 0.1}, 'seed': 0})
  {'train.lr': 0.1, 'seed': 0}
  """
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f'{prefix}{key}.') if isinstance(value, dict)
               else {f'{prefix}{key}': value})
  return out


def _as_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
  """'name: old -> new' for every dotted field that differs.

  `OVERRIDE` and the placement fields (config.mesh.*) are not compared.
  """
  old, new = flatten(old), flatten(new)
  names = sorted(n for n in (set(old) | set(new)) - {OVERRIDE}
                 if not n.startswith(PLACEMENT_PREFIXES))
  missing = '<absent>'
  return [f'{name}: {old.get(name, missing)!r} -> {new.get(name, missing)!r}'
          for name in names if old.get(name, missing) != new.get(name, missing)]


def check_and_save(config: ml_collections.ConfigDict, workdir: str,
                   writer: bool = True) -> None:
  """Saves `workdir/config.json` the first time; refuses a changed config.

  Args:
    config: the run's config; `config.allow_config_change` (default False)
      lets a run continue under a changed config.
    workdir: the experiment's output directory (created if needed).
    writer: False in processes other than 0: check, never write.

  Raises:
    ValueError: workdir/config.json differs from `config`; lists the fields.
  """
  path = os.path.join(workdir, FILENAME)
  new = _as_json(config)
  if os.path.exists(path):
    changed = differences(files.read_json(path), new)
    if not changed:
      return
    listing = '\n  '.join(changed)
    if not config.get(OVERRIDE, False):
      raise ValueError(
          f'{workdir} was started with another config ({path}); changed '
          f'fields (old -> new):\n  {listing}\nPass a new --workdir, or '
          f'--config.{OVERRIDE}=True to continue this run under the new '
          'config (finished runs in it are not repeated).')
    logging.warning('%s: continuing under a changed config (%s=True):\n  %s',
                    workdir, OVERRIDE, listing)
  os.makedirs(workdir, exist_ok=True)
  if writer:
    files.write_json(path, new)
