"""The numbers a noisy-labels run reports, and the sweep's table.

Example:
  >>> summary = summarize(rows)
  >>> print(format_table({'mean': summary, 'winsorized:4': other}))
"""

from typing import Any, Dict, Sequence

SUMMARY_KEYS = ('final_test_accuracy', 'peak_test_accuracy', 'peak_test_step',
                'final_pristine_accuracy', 'final_corrupt_accuracy',
                'corrupt_accuracy_at_peak_test', 'seconds_per_step')


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """One aggregator's summary from its metric rows.

  Args:
    rows: rows with 'step', 'test_accuracy', 'pristine_accuracy',
      'corrupt_accuracy' and 'seconds', in step order.

  Returns:
    Final and peak test accuracy (first peak wins), the final pristine and
    corrupt (memorization) accuracies, the corrupt accuracy at the test peak
    and the run's seconds per step.
  """
  if not rows:
    raise ValueError('rows: got none; a run measures at least its steps 0 '
                     'and last.')
  peak = max(rows, key=lambda r: r['test_accuracy'])
  final = rows[-1]
  return {
      'final_test_accuracy': final['test_accuracy'],
      'peak_test_accuracy': peak['test_accuracy'],
      'peak_test_step': peak['step'],
      'final_pristine_accuracy': final['pristine_accuracy'],
      'final_corrupt_accuracy': final['corrupt_accuracy'],
      'corrupt_accuracy_at_peak_test': peak['corrupt_accuracy'],
      'seconds_per_step': final['seconds'] / max(final['step'], 1),
  }


def format_table(summary: Dict[str, Dict[str, Any]]) -> str:
  """A markdown table: one row per aggregator, one column per SUMMARY_KEYS."""
  lines = ['| aggregator | ' + ' | '.join(SUMMARY_KEYS) + ' |',
           '|---|' + '---:|' * len(SUMMARY_KEYS)]
  for spec, numbers in summary.items():
    cells = [f'{numbers[k]:.3f}' if isinstance(numbers[k], float)
             else str(numbers[k]) for k in SUMMARY_KEYS]
    lines.append(f'| {spec} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
