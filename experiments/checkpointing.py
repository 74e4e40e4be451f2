"""Orbax checkpoints of a training state: save at boundaries, resume the latest."""

from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any) -> None:
  mgr.save(step, args=ocp.args.StandardSave(state))
  mgr.wait_until_finished()


def restore_latest(mgr: ocp.CheckpointManager,
                   like: Any) -> Tuple[Optional[int], Any]:
  """(step, state) of the newest checkpoint, or (None, like) if there is none."""
  step = mgr.latest_step()
  if step is None:
    return None, like
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return step, mgr.restore(step, args=ocp.args.StandardRestore(abstract))
