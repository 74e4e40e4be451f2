"""Append-only metrics files that resume without losing or duplicating rows."""

import json
import os
from typing import Any, Dict, List


def read_rows(path: str) -> List[Dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_after(path: str, step: int) -> List[Dict[str, Any]]:
  """Keeps rows with row['step'] <= step (atomically); returns them."""
  rows = [r for r in read_rows(path) if r['step'] <= step]
  write_atomic(path, ''.join(json.dumps(r) + '\n' for r in rows))
  return rows


def append_row(path: str, row: Dict[str, Any]) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')
    f.flush()


def write_atomic(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)
