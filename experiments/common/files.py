"""Files a run writes: whole files atomically, metrics as JSON lines.

Whole files (JSON, tables, arrays) are written to `<path>.tmp` and moved into
place with `os.replace`, so a kill never leaves half a file. Metrics are one
JSON object per line, appended; a kill in the middle of an append leaves a
partial last line, which `read_rows` drops with a warning.

Example:
  >>> write_json('/tmp/x.json', {'a': 1}); read_json('/tmp/x.json')
  {'a': 1}
"""

import json
import os
from typing import Any, Callable, Dict, List

from absl import logging
import numpy as np

Row = Dict[str, Any]


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and `os.replace`."""
  replace_atomic(path, lambda tmp: _write_text(tmp, text))


def replace_atomic(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp_path)`, then moves the temporary file onto `path`."""
  tmp = f'{path}.tmp'
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _write_text(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_json(path: str) -> Any:
  """The JSON in `path`; ValueError naming the file if it is not JSON."""
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON (empty or damaged: {e}); '
                       'restore it or delete it.') from None


def read_rows(path: str) -> List[Row]:
  """The rows of a JSON-lines file ([] if it does not exist).

  A last line without its newline (a kill during `append_row`) is dropped with
  a warning; any other unreadable line is a ValueError naming the line.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split('\n')
  partial = lines.pop()  # '' when the file ends with a newline
  if partial.strip():
    logging.warning('%s: dropping a partial last line (the run was killed '
                    'while writing it): %.80r', path, partial)
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{number}: not a JSON row ({e}); the metrics '
                       'file is corrupt: delete the run directory to start '
                       'over.') from None
  check_steps(path, rows)
  return rows


def check_steps(path: str, rows: List[Row]) -> None:
  """ValueError if the rows' 'step's are not strictly increasing (rows
  repeated or out of order: two runs wrote the file at once).

  >>> check_steps('m.jsonl', [{'step': 0}, {'step': 4}, {'step': 4}])
  Traceback (most recent call last):
  ...
  ValueError: m.jsonl: damaged metrics: ...
  """
  steps = [r['step'] for r in rows if isinstance(r, dict) and 'step' in r]
  bad = sorted({b for a, b in zip(steps, steps[1:]) if b <= a})
  if bad:
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    raise ValueError(
        f'{path}: damaged metrics: steps not strictly increasing at '
        f'{bad[:10]}{" ..." if len(bad) > 10 else ""} (repeated: '
        f'{repeated[:10]}); two runs wrote this run directory at once. '
        'Its numbers cannot be trusted: delete the run directory and run it '
        'again.')


def append_row(path: str, row: Row) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')
    f.flush()


def truncate_after(path: str, step: int) -> List[Row]:
  """Keeps the rows with row['step'] <= step (rewritten atomically)."""
  rows = [r for r in read_rows(path) if r['step'] <= step]
  write_atomic(path, ''.join(json.dumps(r) + '\n' for r in rows))
  return rows


def write_npy(path: str, array) -> None:
  """np.save to `path` atomically (no '.npy' appended)."""
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.save(f, array)
  replace_atomic(path, write)


def write_npz(path: str, **arrays) -> None:
  """np.savez to `path` atomically (no '.npz' appended)."""
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
  replace_atomic(path, write)
