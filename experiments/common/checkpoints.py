"""Orbax checkpoints of a run: save at boundaries, resume the newest GOOD one.

A checkpoint that cannot be restored (a truncated data file, an empty
`_METADATA` or `manifest.ocdbt`, ...) is moved to `<run>/corrupt_checkpoints/`
with a warning and the previous one is tried, so one bad save does not make
every restart fail.

Example:
  >>> mgr = manager('/tmp/run/checkpoints')
  >>> save(mgr, 8, {'params': params})
  >>> step, state = restore_newest(mgr, {'params': params}, '/tmp/run/bad')
"""

import os
from typing import Any, Dict, Optional, Tuple

from absl import logging
import jax
import orbax.checkpoint as ocp


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A synchronous CheckpointManager keeping the newest `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any,
         metadata: Optional[Dict[str, Any]] = None) -> None:
  """Saves `state` (a pytree of arrays) as `step` and waits until it is on
  disk; `metadata` (JSON-able) goes into the step's orbax custom metadata."""
  mgr.save(step, args=ocp.args.StandardSave(state),
           custom_metadata=metadata or {})
  mgr.wait_until_finished()


def saved_metadata(directory: str) -> Tuple[Optional[int], Dict[str, Any]]:
  """(newest step, its custom metadata) of the checkpoints in `directory`;
  (None, {}) if there are none.

  >>> saved_metadata('/tmp/run/checkpoints')
  (8, {'config': {...}})
  """
  mgr = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    for step in sorted(mgr.all_steps(), reverse=True):
      try:
        return step, dict(mgr.metadata(step).custom_metadata or {})
      except Exception:  # pylint: disable=broad-except
        continue  # an unreadable step: the previous one says as much
    return None, {}
  finally:
    mgr.close()


def restore_newest(mgr: ocp.CheckpointManager, like: Any,
                   quarantine_dir: str) -> Tuple[Optional[int], Any]:
  """(step, state) of the newest checkpoint that restores, or (None, like).

  Args:
    mgr: the run's checkpoint manager.
    like: a pytree with the state's structure, shapes and dtypes.
    quarantine_dir: where checkpoints that fail to restore are moved.

  Returns:
    The restored step and state; (None, like) when there is no good one.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except
      moved = _quarantine(os.path.join(str(mgr.directory), str(step)),
                          quarantine_dir)
      logging.warning('Checkpoint %d in %s cannot be restored (%s: %.200s); '
                      'moved it to %s, trying the previous one.', step,
                      mgr.directory, type(e).__name__, e, moved)
      mgr.reload()
  return None, like


def _quarantine(path: str, quarantine_dir: str) -> str:
  os.makedirs(quarantine_dir, exist_ok=True)
  name = os.path.basename(path)
  target, n = os.path.join(quarantine_dir, name), 1
  while os.path.exists(target):
    target, n = os.path.join(quarantine_dir, f'{name}_{n}'), n + 1
  os.replace(path, target)
  return target
