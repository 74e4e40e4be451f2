"""What a learning-order run reports: when pristine / corrupt examples are learnt,
the best test step vs the onset of memorization; report.md with histograms.

Example:
  >>> summary = summarize(rows, learnt, corrupt, memorization_rise=0.05)
  >>> write_report('/tmp/learning_order')
"""

import math
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting


def memorization_onset(rows: Sequence[Dict[str, Any]], rise: float
                       ) -> Dict[str, Any]:
  """The corrupt-accuracy minimum and the first later step `rise` above it.

  Corrupt accuracy is measured w.r.t. the noisy labels: it first falls (the
  true classes are learnt) and rises when the noisy labels are memorized.

  >>> rows = [{'step': s, 'corrupt_accuracy': a}
  ...         for s, a in [(0, .1), (10, .02), (20, .05), (30, .3)]]
  >>> memorization_onset(rows, 0.05)['onset_step']
  30
  """
  rows = [r for r in rows if not math.isnan(r['corrupt_accuracy'])]
  if not rows:
    return {'min_corrupt_accuracy': None, 'min_corrupt_step': None,
            'onset_step': None}
  low = min(rows, key=lambda r: r['corrupt_accuracy'])
  onset = reporting.first_at_or_above(rows, 'corrupt_accuracy',
                                      low['corrupt_accuracy'] + rise,
                                      after=low['step'])
  return {'min_corrupt_accuracy': low['corrupt_accuracy'],
          'min_corrupt_step': low['step'],
          'onset_step': None if onset is None else onset['step']}


def learnt_numbers(learnt: np.ndarray, mask: np.ndarray,
                   by_step: Optional[int]) -> Dict[str, Any]:
  """Fraction learnt, median / quartile learnt steps, fraction learnt by a step."""
  steps = np.asarray(learnt)[np.asarray(mask, bool)]
  done = steps[steps >= 0]
  out = {'count': int(steps.size),
         'learnt_fraction': float(done.size / steps.size) if steps.size else None,
         'median_learnt_step': float(np.median(done)) if done.size else None,
         'q25_learnt_step': float(np.percentile(done, 25)) if done.size else None,
         'q75_learnt_step': float(np.percentile(done, 75)) if done.size else None}
  if by_step is not None and steps.size:
    out['learnt_by_best_test'] = float(np.mean((steps >= 0) & (steps <= by_step)))
  return out


def summarize(rows: Sequence[Dict[str, Any]], learnt: Optional[np.ndarray],
              corrupt: np.ndarray, memorization_rise: float,
              first_correct: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """One run's summary: accuracies, best test step, onset, learnt steps.

  `learnt` (stays correct to the end) and `first_correct` (first step ever
  correct) are the records of `experiments/common/records.py`.
  """
  best = max(rows, key=lambda r: r['test_accuracy'])
  final = rows[-1]
  out = {'best_test_accuracy': best['test_accuracy'],
         'best_test_step': best['step'],
         'corrupt_accuracy_at_best_test': best['corrupt_accuracy'],
         'pristine_accuracy_at_best_test': best['pristine_accuracy'],
         'final_test_accuracy': final['test_accuracy'],
         'final_train_accuracy': final['train_accuracy'],
         'final_pristine_accuracy': final['pristine_accuracy'],
         'final_corrupt_accuracy': final['corrupt_accuracy'],
         'steps': final['step'], 'seconds': final['seconds'],
         **memorization_onset(rows, memorization_rise)}
  if out['onset_step'] is not None:
    out['best_test_before_onset'] = best['step'] <= out['onset_step']
  if learnt is not None:
    corrupt = np.asarray(corrupt, bool)
    for name, mask in (('pristine', ~corrupt), ('corrupt', corrupt)):
      for key, value in learnt_numbers(learnt, mask, best['step']).items():
        out[f'{name}_{key}'] = value
      if first_correct is not None:
        numbers = learnt_numbers(first_correct, mask, best['step'])
        out[f'{name}_median_first_correct_step'] = numbers['median_learnt_step']
        out[f'{name}_first_correct_by_best_test'] = numbers[
            'learnt_by_best_test']
  return out


def write_report(workdir: str, out_dir: Optional[str] = None) -> str:
  """report.md, learning_order_<p>.png and accuracy.png; the .md path."""
  out_dir = out_dir or workdir
  config = files.read_json(os.path.join(workdir, 'config.json'))
  rise = config['analysis']['memorization_rise']
  runs, summaries, figures = {}, {}, []
  for p in config['noise']['levels']:
    run_dir = os.path.join(workdir, f'noise_{p:.2f}')
    rows = reporting.rows_of(run_dir)
    if not rows or not os.path.exists(os.path.join(run_dir, 'records.npz')):
      continue
    label = f'{100 * p:.0f} % noise'
    with np.load(os.path.join(run_dir, 'records.npz')) as r:
      learnt, first = r['learnt_step'], r['first_correct_step']
    with np.load(os.path.join(run_dir, 'corruption.npz')) as c:
      corrupt = c['corrupt']
    s = summaries[label] = summarize(rows, learnt, corrupt, rise, first)
    runs[label] = rows
    name = f'learning_order_{p:.2f}.png'
    panels = {}
    for title, steps in (('first step classified correctly', first),
                         ('learnt: correct from then on to the end', learnt)):
      panels[title] = {'pristine': steps[~corrupt]}
      if corrupt.any():
        panels[title]['corrupt'] = steps[corrupt]
    plots.plot_learning_order(
        panels, rows[-1]['step'], os.path.join(out_dir, name),
        marks={'best test accuracy': s['best_test_step'],
               'onset of memorization': s['onset_step']},
        title=f'When each example is learnt ({label})')
    figures.append(f'![learning order, {label}]({name})')
  plots.plot_accuracy_panels(
      runs, os.path.join(out_dir, 'accuracy.png'),
      keys=('pristine_accuracy', 'corrupt_accuracy', 'test_accuracy'),
      marks={k: {'best test': s['best_test_step'], 'onset': s['onset_step']}
             for k, s in summaries.items()},
      title='Pristine, corrupt (w.r.t. noisy labels) and test accuracy; '
      'dotted: best test step, dashed: onset of memorization')
  table = reporting.markdown_table(
      ['noise', 'best test acc. (step)', 'onset of memorization',
       'best test before onset', 'corrupt acc. min / at best test / final',
       'test acc. final', 'median first-correct step: pristine / corrupt',
       'median learnt step: pristine / corrupt',
       'first correct by best test: pristine / corrupt',
       'never learnt: pristine / corrupt'],
      [[label, f"{reporting.fmt(s['best_test_accuracy'])} ({s['best_test_step']})",
        s['onset_step'], s.get('best_test_before_onset'),
        ' / '.join(reporting.fmt(s[k]) for k in (
            'min_corrupt_accuracy', 'corrupt_accuracy_at_best_test',
            'final_corrupt_accuracy')),
        s['final_test_accuracy'],
        ' / '.join(reporting.fmt(s.get(f'{g}_median_first_correct_step'))
                   for g in ('pristine', 'corrupt')),
        ' / '.join(reporting.fmt(s.get(f'{g}_median_learnt_step'))
                   for g in ('pristine', 'corrupt')),
        ' / '.join(reporting.fmt(s.get(f'{g}_first_correct_by_best_test'))
                   for g in ('pristine', 'corrupt')),
        ' / '.join(reporting.fmt(None if s.get(f'{g}_learnt_fraction') is None
                                 else 1 - s[f'{g}_learnt_fraction'])
                   for g in ('pristine', 'corrupt'))]
       for label, s in summaries.items()])
  text = f"""# Learning order and early stopping

{reporting.config_line(config)} Every {config['measure']['every_steps']} steps
the whole training set is classified; an example is *learnt* at the first
measured step from which it stays correctly classified to the end (the
reference code's "when learnt"; -1 = never); also recorded: the first step
at which it is classified correctly at all. Onset of memorization: the first
step after the corrupt-accuracy minimum at which corrupt accuracy (w.r.t. the
noisy labels) has risen by {rise}.

{table}

{chr(10).join(figures)}

![accuracies](accuracy.png)
"""
  return reporting.write_markdown(out_dir, text)
