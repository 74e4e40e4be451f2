"""What an easy/hard run reports: the train-half x test-half accuracy matrix; report.md.

Example:
  >>> summary = summarize(rows)           # one subset run
  >>> write_report('/tmp/easy_hard')
"""

import os
from typing import Any, Dict, Optional, Sequence

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting

KINDS = ('easy', 'hard', 'random')
KEYS = ('train_subset_accuracy', 'easy_test_accuracy', 'hard_test_accuracy',
        'random_test_accuracy', 'test_accuracy')


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """Final accuracies, their peaks, and steps / seconds of a subset run."""
  final = rows[-1]
  return {'final': {k: final[k] for k in KEYS},
          'peak': {k: max(r[k] for r in rows) for k in KEYS},
          'steps': final['step'], 'seconds': final['seconds']}


def write_report(workdir: str, out_dir: Optional[str] = None) -> str:
  """report.md, easy_hard.png and accuracy.png; the .md path."""
  out_dir = out_dir or workdir
  config = files.read_json(os.path.join(workdir, 'config.json'))
  sizes = files.read_json(os.path.join(workdir, 'split.json'))
  runs = {f'train {k}': reporting.rows_of(os.path.join(workdir, f'train_{k}'))
          for k in KINDS}
  summaries = {k: summarize(rows) for k, rows in runs.items() if rows}
  plots.plot_bars({k: {f'test {t}': s['final'][f'{t}_test_accuracy']
                       for t in KINDS} for k, s in summaries.items()},
                  os.path.join(out_dir, 'easy_hard.png'),
                  ylabel='final accuracy on held-out half',
                  title='Train on one half, test on the other halves')
  plots.plot_accuracy_panels(
      runs, os.path.join(out_dir, 'accuracy.png'),
      keys=('train_subset_accuracy', 'easy_test_accuracy',
            'hard_test_accuracy', 'test_accuracy'),
      title='Subset runs: accuracy on their train half and on held-out halves')
  table = reporting.markdown_table(
      ['trained on', 'train half', 'easy test half', 'hard test half',
       'random test half', 'test split', 'gap (train − own test)'],
      [[k] + [s['final'][key] for key in KEYS] + [
          s['final']['train_subset_accuracy']
          - s['final'][f"{k.split()[-1]}_test_accuracy"]]
       for k, s in summaries.items()])
  text = f"""# Easy and hard examples (2003.07422)

{reporting.config_line(config)} Split run: {config['train']['epochs']} epochs
on all {sizes['easy'] + sizes['hard']} training examples; the
{sizes['easy']} classified correctly at its end are *easy*, the
{sizes['hard']} others *hard*. Halves of {sizes['easy_train']} examples each
(easy, hard, random control); fresh networks (same initialization) train
{config['easy_hard']['subset_epochs']} epochs on one half and are tested on
the other halves. Final accuracies:

{table}

![easy vs hard](easy_hard.png)

![accuracies](accuracy.png)
"""
  return reporting.write_markdown(out_dir, text)
