"""Helpers of the experiments' reports: reading runs, picking layers, markdown.

Example:
  >>> pick_layers(['layers/10', 'layers/2', 'layers/0'])
  {'first': 'layers/0', 'middle': 'layers/2', 'last': 'layers/10'}
  >>> print(markdown_table(['a', 'b'], [[1, 0.5]]))
  | a | b |
  |---|---:|
  | 1 | 0.500 |
"""

import math
import os
import re
from typing import Any, Dict, Iterable, List, Sequence

from experiments.common import files

REPORT = 'report.md'


def rows_of(run_dir: str) -> List[Dict[str, Any]]:
  """The metric rows of one run directory."""
  return files.read_rows(os.path.join(run_dir, 'metrics.jsonl'))


def natural_key(name: str):
  """'layers/10' after 'layers/2': digit runs compare as numbers."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def pick_layers(modules: Iterable[str]) -> Dict[str, str]:
  """{'first', 'middle', 'last'} module names, in the network's order."""
  names = sorted(modules, key=natural_key)
  if not names:
    return {}
  return {'first': names[0], 'middle': names[(len(names) - 1) // 2],
          'last': names[-1]}


def fmt(value: Any) -> str:
  """A table cell: floats with 3 decimals (3 significant digits if large)."""
  if value is None:
    return '–'
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if math.isnan(value):
      return 'nan'
    return f'{value:.3f}' if abs(value) < 1000 else f'{value:.3g}'
  return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A markdown table; the first column left-aligned, the others right."""
  lines = ['| ' + ' | '.join(header) + ' |',
           '|---|' + '---:|' * (len(header) - 1)]
  lines += ['| ' + ' | '.join(fmt(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def write_markdown(out_dir: str, text: str, name: str = REPORT) -> str:
  """Writes out_dir/name atomically; returns its path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, name)
  files.write_atomic(path, text.rstrip() + '\n')
  return path


def config_line(config: Dict[str, Any]) -> str:
  """One line naming the data, model, noise and training of a config.json."""
  model = config.get('model', {})
  widths = model.get('widths')
  model_name = model.get('name', 'mlp')
  if model_name == 'mlp' and widths:
    model_name = 'MLP ' + '-'.join(str(w) for w in widths)
  train = config.get('train', {})
  noise = config.get('noise', {})
  parts = [f"data `{config.get('data', {}).get('name')}`",
           f'model {model_name}',
           f"SGD lr {train.get('learning_rate')}"
           + (f" momentum {train['momentum']}" if train.get('momentum') else '')
           + f", batch {train.get('batch_size')}, {train.get('epochs')} epochs"]
  if noise:
    parts.append(f"noise `{noise.get('kind', 'permute')}`")
  return '; '.join(parts) + '.'


def first_at_or_above(rows: Sequence[Dict[str, Any]], key: str,
                      threshold: float, after: int = -1):
  """The first row (step > after) with row[key] >= threshold, or None."""
  for r in rows:
    if r['step'] > after and r[key] >= threshold:
      return r
  return None
