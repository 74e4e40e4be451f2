"""The numbers a real-vs-random run reports, and the demo's table.

Example:
  >>> summary = summarize(rows, dense_until=40)
  >>> print(format_table({'real': summary, 'random': other}))
"""

from typing import Any, Dict, List

import numpy as np

TABLE_KEYS = ('early_m_coherence', 'peak_m_coherence', 'late_peak_m_coherence',
              'late_peak_epoch', 'final_m_coherence', 'train_accuracy',
              'test_accuracy', 'seconds')


def summarize(rows: List[Dict[str, Any]], dense_until: int) -> Dict[str, Any]:
  """One run's summary from its metric rows.

  Args:
    rows: the run's rows (with 'step', 'epoch', 'm_coherence', accuracies,
      'seconds'), in step order.
    dense_until: the last step of the densely measured start.

  Returns:
    Early (mean over steps <= dense_until), peak, late-peak and final
    m-coherence, the final accuracies, the steps and the run's seconds.
  """
  early = [r['m_coherence'] for r in rows if r['step'] <= dense_until]
  late = [r for r in rows if r['step'] > dense_until] or rows[-1:]
  peak = max(rows, key=lambda r: r['m_coherence'])
  late_peak = max(late, key=lambda r: r['m_coherence'])
  final = rows[-1]
  return {
      'early_m_coherence': float(np.mean(early)),
      'peak_m_coherence': peak['m_coherence'],
      'peak_step': peak['step'],
      'late_peak_m_coherence': late_peak['m_coherence'],
      'late_peak_epoch': late_peak['epoch'],
      'final_m_coherence': final['m_coherence'],
      'train_accuracy': final['train_accuracy'],
      'test_accuracy': final['test_accuracy'],
      'steps': final['step'],
      'seconds': final['seconds'],
  }


def format_table(summary: Dict[str, Dict[str, Any]]) -> str:
  """A markdown table: one row per TABLE_KEYS metric, one column per mode."""
  modes = list(summary)
  lines = ['| metric | ' + ' | '.join(modes) + ' |',
           '|---|' + '---:|' * len(modes)]
  for key in TABLE_KEYS:
    cells = [summary[m].get(key, float('nan')) for m in modes]
    lines.append(f'| {key} | ' + ' | '.join(f'{c:.3f}' for c in cells) + ' |')
  return '\n'.join(lines)
