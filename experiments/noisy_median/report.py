"""What a noisy-median sweep reports: memorization and test accuracy per aggregator.

Example:
  >>> summary = summarize(rows)
  >>> write_report('/tmp/noisy_median')
"""

import os
from typing import Any, Dict, Optional, Sequence

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting


def _at(rows, step):
  """The last row at or before `step`."""
  return [r for r in rows if r['step'] <= step][-1]


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """Final / peak test accuracy, pristine and corrupt accuracy, memorization."""
  peak = max(rows, key=lambda r: r['test_accuracy'])
  final = rows[-1]
  third, two_thirds = (_at(rows, final['step'] // 3),
                       _at(rows, 2 * final['step'] // 3))
  return {
      'final_test_accuracy': final['test_accuracy'],
      'peak_test_accuracy': peak['test_accuracy'],
      'peak_test_step': peak['step'],
      'final_pristine_accuracy': final['pristine_accuracy'],
      'final_corrupt_accuracy': final['corrupt_accuracy'],
      'corrupt_accuracy_at_third': third['corrupt_accuracy'],
      'corrupt_accuracy_at_two_thirds': two_thirds['corrupt_accuracy'],
      'corrupt_accuracy_at_peak_test': peak['corrupt_accuracy'],
      'steps': final['step'], 'seconds': final['seconds'],
  }


def write_report(workdir: str, out_dir: Optional[str] = None) -> str:
  """report.md and accuracy.png of a sweep; the .md path."""
  out_dir = out_dir or workdir
  config = files.read_json(os.path.join(workdir, 'config.json'))
  noise = files.read_json(os.path.join(workdir, 'corruption.json'))
  runs = {}
  for spec in config['aggregators']:
    rows = reporting.rows_of(os.path.join(workdir, spec.replace(':', '_c')))
    if rows:
      runs[spec] = rows
  summaries = {k: summarize(rows) for k, rows in runs.items()}
  plots.plot_accuracy_panels(
      runs, os.path.join(out_dir, 'accuracy.png'),
      keys=('pristine_accuracy', 'corrupt_accuracy', 'test_accuracy'),
      title='Pristine, corrupt (w.r.t. noisy labels, = memorization) and test '
      'accuracy')
  steps = next(iter(summaries.values()))['steps'] if summaries else 0
  table = reporting.markdown_table(
      ['aggregator', 'test acc. final', 'test acc. peak (step)',
       f'corrupt acc. at step {steps // 3} / {2 * steps // 3} / final',
       'pristine acc. final'],
      [[k, s['final_test_accuracy'],
        f"{reporting.fmt(s['peak_test_accuracy'])} ({s['peak_test_step']})",
        ' / '.join(reporting.fmt(s[f]) for f in (
            'corrupt_accuracy_at_third', 'corrupt_accuracy_at_two_thirds',
            'final_corrupt_accuracy')),
        s['final_pristine_accuracy']] for k, s in summaries.items()])
  if 'corrupt_fraction' in noise:
    changed = (f"{100 * noise['corrupt_fraction']:.1f} % of the training "
               "labels actually changed ('corrupt')")
  else:  # streamed data: the per-index rule, an exact fraction relabelled
    changed = (f"{100 * noise['selected_fraction']:.1f} % of the training "
               f"examples relabelled (per-index rule `{noise['rule']}`; "
               "'corrupt' = the label actually changed)")
  text = f"""# Median of 3 at {100 * config['noise']['p']:.0f} % label noise (2003.07422)

{reporting.config_line(config)} Labels: `{noise['kind']}` noise with
p = {noise['p']}: {changed}. No momentum. `m3`: one update per 3
batch gradients (their median); `rm3_reference` / `ra3_reference`: the
median / mean of the current and the previous two batch gradients, no step
until 3 are buffered (the authors' PyTorch RM3); `mean`: plain SGD.

{table}

![accuracies](accuracy.png)
"""
  return reporting.write_markdown(out_dir, text)
