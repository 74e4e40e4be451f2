"""A resumable training loop: measure, checkpoint, step; nothing written twice.

The loop owns resumption: it restores the newest good orbax checkpoint of
`run_dir/checkpoints`, drops metric rows newer than it, and continues. Given the
same inputs, a resumed run writes the same rows as an uninterrupted one. The
elapsed run time is saved with each checkpoint, so `seconds` counts the whole
run across restarts. A step that makes the params non-finite stops the run
(NonFiniteError naming the step) before anything after it is measured or
checkpointed.

Rows lost before the resumed checkpoint (metrics.jsonl deleted, a line cut
out of it) cannot be measured again: a resumed run that finds measurement
steps before its checkpoint without a row warns, records them in
`run_dir/missing_rows.json` and `completeness(run_dir)` says so, so the run's
summary is marked incomplete instead of reporting from part of the rows.

Each checkpoint carries `metadata` (the run's config, see run_config) in
orbax's per-step custom metadata, so a workdir whose config.json was deleted
is still checked against the config its checkpoints were made with.

Per-example records (e.g. the step at which each example was learnt) are an
optional second pytree, updated at the measurement steps and saved in the same
checkpoints, so a resumed run continues them exactly; the final records are
written to `run_dir/records.npz`. Every row also goes to TensorBoard event
files in run_dir (`metric_writers`; a resumed run purges the events after
its checkpoint, as it truncates metrics.jsonl). Progress (step, steps/s, ETA, the latest
metrics) is logged through absl at INFO every `progress_seconds` of work.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from absl import logging
import jax
import numpy as np

from experiments.common import checkpoints
from experiments.common import distributed
from experiments.common import files
from experiments.common import metric_writers
from experiments.common import progress as progress_lib
from experiments.common import train_step as train_step_lib

State = Any
Row = Dict[str, Any]
RECORDS = 'records.npz'  # the final per-example records, in the run dir
MISSING = 'missing_rows.json'  # measurement steps whose rows were lost
SUMMARY = 'summary.json'  # a finished run's summary, written last


class NonFiniteError(FloatingPointError):
  """A training step made the parameters NaN or infinite."""


def run(run_dir: str, *, state: State, total_steps: int,
        train_step: Callable[[State, int], Tuple[State, jax.Array]],
        measure: Callable[[State, int], Row],
        measure_steps: Set[int], checkpoint_every: int,
        on_step: Optional[Callable[[int], None]] = None,
        log: Optional[Callable[[Row], None]] = None,
        place: Optional[Callable[[State], State]] = None,
        writer: bool = True,
        records: Optional[Any] = None,
        update_records: Optional[Callable[[State, Any, int], Any]] = None,
        progress_seconds: float = 10.0,
        name: str = '',
        metadata: Optional[Dict[str, Any]] = None,
        measured_train_step: Optional[
            Callable[[State, int], Tuple[State, jax.Array, Row]]] = None
        ) -> List[Row]:
  """Runs steps [resumed step, total_steps]; returns every metric row.

  Args:
    run_dir: holds metrics.jsonl and checkpoints/ (resumed if present).
    state: the initial state (a pytree of arrays).
    total_steps: the number of training steps.
    train_step: `train_step(state, step) -> (state, finite)`, `finite` a
      device bool (are the new params finite?).
    measure: `measure(state, step) -> row`; the loop adds 'step' and
      'seconds' (elapsed run time, across restarts) to the row.
    measure_steps: the steps at which to measure (before that step's update).
    checkpoint_every: save every this many steps.
    on_step: called first at each step (tests simulate crashes with it).
    log: called with each new row.
    place: applied to the state after a checkpoint is restored (e.g.
      replicate it over the mesh).
    writer: False in every process but process 0 of a multi-process run:
      metrics.jsonl is read (resume) but not written; checkpoints are saved
      by every process together (orbax coordinates them).
    records: optional per-example records (a pytree of arrays), checkpointed
      with the state and written to `run_dir/records.npz` (a dict of arrays)
      when the run ends.
    update_records: `update_records(state, records, step) -> records`, called
      at each measurement step before `measure`. It must be idempotent at a
      step (a resumed run repeats the measurement at its checkpoint's step).
    progress_seconds: log progress (absl INFO) at most this often.
    name: the run's name in the progress lines.
    metadata: JSON-able facts saved with every checkpoint (orbax custom
      metadata), e.g. {'config': ...} (`checkpoints.saved_metadata`).
    measured_train_step: `measured_train_step(state, step) -> (state, finite,
      batch_row)`: the step's update together with measurements of its own
      training batch (e.g. `Trainer.measured_step`, one backward pass for
      both). Called at each measurement step but the last (which has no
      training batch) instead of `train_step`, its `batch_row` merged into
      the row.

  Returns:
    All rows of the run, the resumed ones included.

  Raises:
    NonFiniteError: a step made the params non-finite; the checkpoints saved
      before it are kept.
  """
  if checkpoint_every <= 0:
    raise ValueError(f'checkpoint_every: got {checkpoint_every}; pass a '
                     'positive number of steps.')
  os.makedirs(run_dir, exist_ok=True)  # every process: orbax needs it
  metrics_path = os.path.join(run_dir, 'metrics.jsonl')
  if (records is None) != (update_records is None):
    raise ValueError('records and update_records: pass both or neither.')
  mgr = checkpoints.manager(os.path.join(run_dir, 'checkpoints'))
  metric_writer = None
  like = {'state': state, 'elapsed_seconds': np.zeros((), np.float64)}
  if records is not None:
    like['records'] = records
  try:
    start, saved = checkpoints.restore_newest(
        mgr, like, os.path.join(run_dir, 'corrupt_checkpoints'))
    start, state = start or 0, saved['state']
    records = saved.get('records')
    if start and place is not None:
      state = place(state)
    if writer:
      rows = files.truncate_after(metrics_path, start - 1)
    else:
      rows = [r for r in files.read_rows(metrics_path) if r['step'] < start]
    _note_missing_rows(run_dir, rows, measure_steps, start, writer)
    metric_writer = (metric_writers.MultiWriter([
        metric_writers.JsonlWriter(metrics_path),
        metric_writers.TensorBoardWriter(run_dir, purge_step=start)])
                     if writer else None)
    clock = _Clock(float(saved['elapsed_seconds']))
    reporter = progress_lib.Reporter(name or run_dir, start, total_steps,
                                     progress_seconds)
    unchecked: List[Tuple[int, jax.Array]] = []
    for step in range(start, total_steps + 1):
      if on_step is not None:
        on_step(step)
      measuring = step in measure_steps
      saving = step > start and step % checkpoint_every == 0
      if measuring or saving or step == total_steps:
        _check_finite(unchecked, mgr.latest_step())
        unchecked = []
      stepped = None
      if measuring:
        if records is not None:
          records = update_records(state, records, step)
        batch_row = {}
        if measured_train_step is not None and step < total_steps:
          stepped = measured_train_step(state, step)
          batch_row = stepped[2]
        row = {'step': step, **measure(state, step), **batch_row,
               'seconds': clock()}
        if metric_writer is not None:
          metric_writer.write_row(row)
        rows.append(row)
        if log is not None:
          log(row)
      if saving:
        saved = {'state': state,
                 'elapsed_seconds': np.asarray(clock(), np.float64)}
        if records is not None:
          saved['records'] = records
        checkpoints.save(mgr, step, saved, metadata)
      if step == total_steps:
        break
      if stepped is not None:   # this step's update, made while measuring
        state, finite = stepped[0], stepped[1]
      else:
        state, finite = train_step(state, step)
      unchecked.append((step, finite))
      reporter.maybe_log(step + 1, finite, rows[-1] if rows else None)
  finally:
    mgr.close()
    if metric_writer is not None:
      metric_writer.close()
  if records is not None and writer:
    files.write_npz(os.path.join(run_dir, RECORDS),
                    **{k: np.asarray(jax.device_get(v))
                       for k, v in records.items()})
  logging.info('%s: finished %d steps in %.1f s of run time.',
               name or run_dir, total_steps, clock())
  return rows


def _note_missing_rows(run_dir: str, rows: List[Row], measure_steps: Set[int],
                       start: int, writer: bool) -> None:
  """Warns about (and records in run_dir/missing_rows.json) the measurement
  steps before `start` that have no row."""
  present = {r['step'] for r in rows}
  missing = sorted(s for s in measure_steps if s < start and s not in present)
  if not missing:
    return
  logging.warning(
      '%s: metrics.jsonl lacks the rows of %d measurement step(s) before the '
      'checkpoint at step %d (%s%s): the file was deleted or edited. They '
      'cannot be measured again; the run goes on and its summary is marked '
      'incomplete ("complete": false). Delete the run directory to measure '
      'them.', run_dir, len(missing), start, missing[:10],
      ' ...' if len(missing) > 10 else '')
  if writer:
    path = os.path.join(run_dir, MISSING)
    before = files.read_json(path) if os.path.exists(path) else []
    files.write_json(path, sorted(set(before) | set(missing)))


def completeness(run_dir: str) -> Dict[str, Any]:
  """{} for a run with every measurement row; else {'complete': False,
  'missing_steps': [...]} (merge it into the run's summary).

  >>> completeness('/tmp/run_with_every_row')
  {}
  """
  path = os.path.join(run_dir, MISSING)
  if not os.path.exists(path):
    return {}
  return {'complete': False, 'missing_steps': files.read_json(path)}


def finished_summary(run_dir: str) -> Optional[Dict[str, Any]]:
  """run_dir/summary.json if the run has finished (it is written last), else
  None."""
  path = os.path.join(run_dir, SUMMARY)
  return files.read_json(path) if os.path.exists(path) else None


def write_summary(run_dir: str, summary: Dict[str, Any]) -> Dict[str, Any]:
  """Writes run_dir/summary.json (process 0; it marks the run finished), with
  `completeness(run_dir)` ({'complete': False, ...} if rows were lost).
  Returns what it wrote."""
  summary = {**summary, **completeness(run_dir)}
  if distributed.is_writer():
    files.write_json(os.path.join(run_dir, SUMMARY), summary)
  return summary


class _Clock:
  """Seconds of run time: those restored plus those since construction."""

  def __init__(self, before: float):
    self._before, self._started = before, time.time()

  def __call__(self) -> float:
    return self._before + time.time() - self._started


def _check_finite(unchecked: List[Tuple[int, jax.Array]],
                  last_checkpoint: Optional[int]) -> None:
  """Raises NonFiniteError at the first step whose flag is False."""
  if not unchecked:
    return
  finite = jax.device_get([f for _, f in unchecked])
  for (step, _), ok in zip(unchecked, finite):
    if not ok:
      kept = ('no checkpoint was saved yet' if last_checkpoint is None
              else f'the newest checkpoint (step {last_checkpoint}) is kept')
      raise NonFiniteError(
          f'step {step}: the parameters became NaN or infinite in this '
          f'training step; nothing after it was measured or checkpointed and '
          f'{kept}. Lower config.train.learning_rate (or check the data).')


def fit(run_dir: str, *, trainer: Any, params: Any,
        read: Callable[[int], Tuple[Any, bool]], total_steps: int,
        measure: Callable[[State, int], Row], measure_steps: Set[int],
        checkpoint_every: int, **kwargs: Any) -> List[Row]:
  """Trains `params` with `trainer` on the batches of `read`: every
  experiment's loop (`run` with the trainer's step, resumable; process 0
  writes the files).

  Args:
    run_dir: as `run`.
    trainer: a `train_step.Trainer` (init, step, place, measured_step).
    params: the initial params.
    read: `read(step) -> (batch, process_local)`, the step's training batch
      (`examples.batch_reader`).
    total_steps: the number of training steps (always measured at the end).
    measure, measure_steps, checkpoint_every: as `run`.
    **kwargs: `run`'s other options (on_step, log, name, metadata, records,
      update_records).

  Example:
    >>> rows = fit(run_dir, trainer=trainer, params=net.params, read=read,
    ...            total_steps=100, measure=measure, measure_steps={0, 50},
    ...            checkpoint_every=50)
  """
  def step(state, at):
    batch, process_local = read(at)
    if process_local:
      return trainer.step(state, batch, process_local=True)
    return trainer.step(state, batch)

  return run(run_dir, state=trainer.init(params), total_steps=total_steps,
             train_step=step, measure=measure,
             measure_steps={int(m) for m in measure_steps
                            if m <= total_steps} | {total_steps},
             checkpoint_every=checkpoint_every, place=trainer.place,
             writer=distributed.is_writer(),
             measured_train_step=train_step_lib.loop_measured_step(trainer,
                                                                   read),
             **kwargs)
