"""A resumable training loop: measure, checkpoint, step; nothing written twice.

The loop owns resumption: it restores the newest orbax checkpoint of
`run_dir/checkpoints`, drops metric rows newer than it, and continues. Given the
same inputs, a resumed run writes the same rows as an uninterrupted one.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional, Set

from experiments import checkpointing
from experiments import jsonl

State = Dict[str, Any]  # {'params': ..., 'opt_state': ...}


def run(run_dir: str, *, state: State, total_steps: int,
        train_step: Callable[[State, int], State],
        measure: Callable[[State, int], Dict[str, Any]],
        measure_steps: Set[int], checkpoint_every: int,
        on_step: Optional[Callable[[int], None]] = None,
        log: Optional[Callable[[Dict[str, Any]], None]] = None
        ) -> List[Dict[str, Any]]:
  """Runs steps [resumed step, total_steps]; returns every metric row.

  `train_step(state, step)` returns the state after that step; `measure(state,
  step)` returns a row (the loop adds 'step' and 'seconds') and runs at every
  step in `measure_steps`. `on_step(step)` runs first at each step.
  """
  if checkpoint_every <= 0:
    raise ValueError(f'checkpoint_every: got {checkpoint_every}; pass a '
                     'positive number of steps.')
  os.makedirs(run_dir, exist_ok=True)
  metrics_path = os.path.join(run_dir, 'metrics.jsonl')
  mgr = checkpointing.manager(os.path.join(run_dir, 'checkpoints'))
  start, state = checkpointing.restore_latest(mgr, state)
  start = start or 0
  rows = jsonl.truncate_after(metrics_path, start - 1)
  started = time.time()
  for step in range(start, total_steps + 1):
    if on_step is not None:
      on_step(step)
    if step in measure_steps:
      row = {'step': step, **measure(state, step),
             'seconds': time.time() - started}
      jsonl.append_row(metrics_path, row)
      rows.append(row)
      if log is not None:
        log(row)
    if step > start and step % checkpoint_every == 0:
      checkpointing.save(mgr, step, state)
    if step == total_steps:
      break
    state = train_step(state, step)
  mgr.close()
  return rows
