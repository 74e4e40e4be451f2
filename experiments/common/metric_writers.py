"""Where metric rows go: metrics.jsonl, TensorBoard event files, or your own.

`MetricWriter` is the interface (in the spirit of `clu.metric_writers`, which
the flax examples use): `write_scalars(step, {name: value})`, plus
`write_row(row)` for a whole metric row (nested dicts flattened to '/'-joined
tags), `flush()` and `close()`. Implementations:
  JsonlWriter        a row per line of metrics.jsonl, nesting kept.
  TensorBoardWriter  event files read by `tensorboard --logdir`; written by
                     tensorboardX, so TensorFlow is not needed.
  MultiWriter        several at once.
Every experiment's loop (`loop.run`) writes each measurement row to
metrics.jsonl and to event files in the same directory, so
`tensorboard --logdir WORKDIR` shows every run of a workdir (m-coherence
whole and per module, noise scale, accuracies, loss, learning rate, ...).
A writer of one's own subclasses `MetricWriter` and implements
`write_scalars`.

Example:
  >>> flatten({'step': 3, 'm_coherence': 2.5, 'modules': {'dense': 1.5},
  ...          'name': 'mean', 'finished': True})
  {'m_coherence': 2.5, 'modules/dense': 1.5}
"""

import abc
import json
import logging
import math
import numbers
import os
from typing import Any, Dict, Iterable, Mapping, Optional

Row = Dict[str, Any]


def flatten(row: Mapping[str, Any], prefix: str = '') -> Dict[str, float]:
  """The row's numbers as {'/'-joined tag: float}; 'step', bools, text dropped.

  Args:
    row: a metric row; nested dicts (e.g. 'modules') become 'modules/<name>'.
    prefix: prepended to every tag.

  Returns:
    A flat dict of float values (nan and inf kept).
  """
  out = {}
  for key, value in row.items():
    tag = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flatten(value, tag + '/'))
    elif (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and not (not prefix and key == 'step')):
      out[tag] = float(value)
  return out


class MetricWriter(abc.ABC):
  """Writes scalars per step. Subclasses implement `write_scalars`."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes {tag: value} at `step`."""

  def write_row(self, row: Mapping[str, Any]) -> None:
    """Writes a metric row (its 'step' and the numbers of `flatten(row)`)."""
    self.write_scalars(int(row['step']), flatten(row))

  def flush(self) -> None:
    """Makes what was written durable (default: nothing to do)."""

  def close(self) -> None:
    """Flushes and releases files (default: `flush`)."""
    self.flush()

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class JsonlWriter(MetricWriter):
  """Rows appended to a JSON-lines file (each line flushed), nesting kept.

  Example:
    >>> w = JsonlWriter('/tmp/metric_writers_doctest.jsonl', truncate=True)
    >>> w.write_row({'step': 0, 'loss': 1.5, 'modules': {'a': 2.0}})
    >>> w.write_scalars(1, {'loss': 1.25})
    >>> open('/tmp/metric_writers_doctest.jsonl').read().splitlines()
    ['{"step": 0, "loss": 1.5, "modules": {"a": 2.0}}', '{"step": 1, "loss": 1.25}']
  """

  def __init__(self, path: str, truncate: bool = False):
    self.path = path
    if truncate:
      open(path, 'w').close()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self.write_row({'step': int(step), **scalars})

  def write_row(self, row: Mapping[str, Any]) -> None:
    with open(self.path, 'a') as f:
      f.write(json.dumps(dict(row)) + '\n')
      f.flush()


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files in `logdir` (tensorboardX; no TensorFlow).

  Args:
    logdir: the directory (e.g. a run directory, next to metrics.jsonl).
    purge_step: a resumed run's first step: TensorBoard hides the events of
      earlier files at this step and after (they are written again).

  Raises:
    ImportError: tensorboardX is not installed (it is in the `experiments`
      extra: pip install -e '.[experiments]').
  """

  def __init__(self, logdir: str, purge_step: Optional[int] = None):
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          'TensorBoardWriter: tensorboardX is not installed; pip install '
          "tensorboardX (or -e '.[experiments]'), or write metrics.jsonl "
          'only with JsonlWriter.') from e
    self.logdir = logdir
    # nan / inf are values here (an undefined noise scale says so): not
    # worth a warning per scalar.
    logging.getLogger('tensorboardX.x2num').setLevel(logging.ERROR)
    # The file name holds the time in seconds: a resume within the same
    # second would overwrite the earlier file without a suffix of its own.
    self._writer = tensorboardX.SummaryWriter(
        logdir=logdir, purge_step=purge_step or None, flush_secs=10,
        filename_suffix=f'.{os.getpid()}.{purge_step or 0}')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, float(value), int(step))
    self._writer.flush()

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter(MetricWriter):
  """Writes to every writer of `writers`, in order."""

  def __init__(self, writers: Iterable[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_row(self, row: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_row(row)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


def read_event_scalars(logdir: str) -> Dict[int, Dict[str, float]]:
  """{step: {tag: value}} of the event files in `logdir` (tests, reports).

  Read with tensorboard's own `EventAccumulator` (the `test` extra), which
  honours a resumed run's purge step.
  """
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  out: Dict[int, Dict[str, float]] = {}
  for tag in acc.Tags()['scalars']:
    for event in acc.Scalars(tag):
      out.setdefault(int(event.step), {})[tag] = float(event.value)
  return out


def same_value(a: float, b: float, rtol: float = 0.0) -> bool:
  """a == b (to rtol), nan equal to nan (event files store float32)."""
  if math.isnan(a) or math.isnan(b):
    return math.isnan(a) and math.isnan(b)
  if math.isinf(a) or math.isinf(b):
    return a == b
  return abs(a - b) <= rtol * max(abs(a), abs(b))
