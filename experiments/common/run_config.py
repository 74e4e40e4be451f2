"""`config.json` of a workdir: saved at the first start, compared at every start.

Resuming (or re-running a finished) workdir with a different config would mix
two experiments under one name, so it is refused with the differing fields,
unless the config sets `allow_config_change=True` (then the new config is saved
and the change logged). A finished run is never extended: more train.epochs
on a workdir with finished runs is refused even then.

Checkpoints carry the config they were made with (`metadata(config)` in
orbax's per-step custom metadata): with config.json deleted, the config is
compared against theirs, and config.json written again.

Example:
  >>> check_and_save(config, '/tmp/rvr')  # ValueError if /tmp/rvr has another
"""

import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import ml_collections

from experiments.common import checkpoints
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


def as_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config as config.json holds it (plain JSON types)."""
  return json.loads(config.to_json_best_effort())


def metadata(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """What every checkpoint of a run carries: {'config': as_json(config)}."""
  return {'config': as_json(config)}


def read(path: str) -> Dict[str, Any]:
  """config.json at `path`; ValueError naming the file if it is not JSON."""
  try:
    saved = files.read_json(path)
  except ValueError as e:
    raise ValueError(
        f'{path}: not a config (empty or damaged JSON: {e}). Delete it: the '
        'run is then checked against the config its checkpoints carry and '
        'the file written again.') from None
  if not isinstance(saved, dict):
    raise ValueError(f'{path}: not a config (a JSON {type(saved).__name__}, '
                     'not an object). Delete it to have it written again.')
  return saved


def checkpointed(workdir: str) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
  """(checkpoint dir, config) of the newest checkpoint in workdir that
  carries one (its runs' `checkpoints/` folders, one level deep);
  (None, None) if none does."""
  found = []
  for directory in (glob.glob(os.path.join(workdir, 'checkpoints')) +
                    glob.glob(os.path.join(workdir, '*', 'checkpoints'))):
    step, meta = checkpoints.saved_metadata(directory)
    if step is not None and 'config' in meta:
      found.append((os.path.getmtime(os.path.join(directory, str(step))),
                    os.path.join(directory, str(step)), meta['config']))
  if not found:
    return None, None
  _, where, config = max(found, key=lambda f: f[0])
  return where, config


def finished_runs(workdir: str) -> List[str]:
  """The summary.json files of the runs in workdir (one level deep)."""
  return sorted(glob.glob(os.path.join(workdir, '*', 'summary.json')) +
                glob.glob(os.path.join(workdir, 'summary.json')))


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
  new = as_json(config)
  if os.path.exists(path):
    old, source = read(path), path
  else:
    where, old = checkpointed(workdir)
    source = f'its checkpoint {where} ({path} is missing)'
  if old is not None:
    changed = differences(old, new)
    if changed:
      _allow_change(config, workdir, source, changed)
  os.makedirs(workdir, exist_ok=True)
  if writer and (old is None or changed or not os.path.exists(path)):
    files.write_json(path, new)


def _allow_change(config: ml_collections.ConfigDict, workdir: str,
                  source: str, changed: List[str]) -> None:
  """Raises unless allow_config_change is set and no finished run would
  have to be extended; logs the change otherwise."""
  listing = '\n  '.join(changed)
  if not config.get(OVERRIDE, False):
    raise ValueError(
        f'{workdir} was started with another config ({source}); changed '
        f'fields (old -> new):\n  {listing}\nPass a new --workdir, or '
        f'--config.{OVERRIDE}=True to continue this run under the new '
        'config (finished runs in it are not repeated).')
  done = finished_runs(workdir)
  epochs = [c for c in changed if c.startswith('train.epochs:')]
  if epochs and done:
    raise ValueError(
        f'{epochs[0]}: {workdir} holds finished runs ({", ".join(done)}), '
        f'which are not extended to more epochs, even with {OVERRIDE}=True. '
        'Pass a new --workdir for the longer run.')
  logging.warning('%s: continuing under a changed config (%s=True):\n  %s',
                  workdir, OVERRIDE, listing)
