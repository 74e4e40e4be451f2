"""What a coherence-evolution sweep reports: collapse, rise, per layer; report.md.

Example:
  >>> summary = summarize(rows, dense_until=40)
  >>> write_report('/tmp/coh_evo')        # report.md + PNGs in the workdir
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting

COLLAPSE_LEVEL = 10.0  # the papers: from ~m to < 10 in the first ~25 steps


def summarize(rows: Sequence[Dict[str, Any]], dense_until: int
              ) -> Dict[str, Any]:
  """One run's numbers: initial, early minimum, first step below 10, peak
  after the minimum, final (whole network and first/middle/last layer), and
  the final / peak accuracies."""
  if not rows:
    raise ValueError('rows: got none; a run measures at least steps 0 and last.')
  early = [r for r in rows if r['step'] <= dense_until] or rows[:1]
  low = min(early, key=lambda r: r['m_coherence'])
  later = [r for r in rows if r['step'] >= low['step']]
  peak = max(later, key=lambda r: r['m_coherence'])
  below = next((r for r in rows if r['m_coherence'] < COLLAPSE_LEVEL), None)
  best_test = max(rows, key=lambda r: r['test_accuracy'])
  final = rows[-1]
  out = {
      'initial_m_coherence': rows[0]['m_coherence'],
      'early_min_m_coherence': low['m_coherence'], 'early_min_step': low['step'],
      'first_step_below_10': None if below is None else below['step'],
      'peak_after_min_m_coherence': peak['m_coherence'],
      'peak_after_min_step': peak['step'],
      'final_m_coherence': final['m_coherence'],
      'mean_m_coherence': float(np.mean([r['m_coherence'] for r in rows])),
      'final_train_accuracy': final['train_accuracy'],
      'final_pristine_accuracy': final['pristine_accuracy'],
      'final_corrupt_accuracy': final['corrupt_accuracy'],
      'final_test_accuracy': final['test_accuracy'],
      'peak_test_accuracy': best_test['test_accuracy'],
      'peak_test_step': best_test['step'],
      'steps': final['step'], 'seconds': final['seconds'],
  }
  for position, module in reporting.pick_layers(rows[0]['modules']).items():
    values = [r['modules'][module] for r in rows]
    out[f'{position}_layer'] = module
    out[f'{position}_initial_m_coherence'] = values[0]
    out[f'{position}_peak_m_coherence'] = float(np.max(values))
    out[f'{position}_mean_m_coherence'] = float(np.mean(values))
    out[f'{position}_final_m_coherence'] = values[-1]
  return out


def _runs(workdir: str, config: Dict[str, Any]) -> Dict[str, List[dict]]:
  runs = {}
  for p in config['noise']['levels']:
    run_dir = os.path.join(workdir, f'noise_{p:.2f}')
    rows = reporting.rows_of(run_dir)
    if rows:
      runs[f'{100 * p:.0f} % noise'] = rows
  return runs


def write_report(workdir: str, out_dir: Optional[str] = None) -> str:
  """report.md, coherence.png and accuracy.png of a sweep; the .md path."""
  out_dir = out_dir or workdir
  config = files.read_json(os.path.join(workdir, 'config.json'))
  runs = _runs(workdir, config)
  measure = config['measure']
  # dense_steps: a config.json written before config.measure was one block.
  dense = measure['dense_until'] if 'dense_until' in measure else measure[
      'dense_steps']
  summaries = {label: summarize(rows, dense) for label, rows in runs.items()}
  layers = reporting.pick_layers(next(iter(runs.values()))[0]['modules'])
  plots.plot_coherence_evolution(
      runs, layers, os.path.join(out_dir, 'coherence.png'),
      title='m-coherence of a fixed training sample at 0-100 % label noise '
      f"(m = {config['measure']['sample_size']})")
  plots.plot_accuracy_panels(
      runs, os.path.join(out_dir, 'accuracy.png'), log_x=True,
      keys=('train_accuracy', 'pristine_accuracy', 'corrupt_accuracy',
            'test_accuracy'),
      title='Accuracies (corrupt: w.r.t. the noisy labels)')
  whole = reporting.markdown_table(
      ['noise', 'step 0', 'early min (step)', 'first step < 10',
       'peak after min (step)', 'final', 'train acc.', 'corrupt acc.',
       'test acc. final / peak (step)'],
      [[label, s['initial_m_coherence'],
        f"{reporting.fmt(s['early_min_m_coherence'])} ({s['early_min_step']})",
        s['first_step_below_10'],
        f"{reporting.fmt(s['peak_after_min_m_coherence'])} "
        f"({s['peak_after_min_step']})",
        s['final_m_coherence'], s['final_train_accuracy'],
        s['final_corrupt_accuracy'],
        f"{reporting.fmt(s['final_test_accuracy'])} / "
        f"{reporting.fmt(s['peak_test_accuracy'])} ({s['peak_test_step']})"]
       for label, s in summaries.items()])
  per_layer = reporting.markdown_table(
      ['noise'] + [f'{pos} ({name}) {kind}' for pos, name in layers.items()
                   for kind in ('step 0', 'mean', 'peak', 'final')],
      [[label] + [s[f'{pos}_{kind}_m_coherence'] for pos in layers
                  for kind in ('initial', 'mean', 'peak', 'final')]
       for label, s in summaries.items()])
  text = f"""# Coherence evolution under label noise (2008.01217)

{reporting.config_line(config)} m-coherence of a FIXED sample of
{config['measure']['sample_size']} training examples (with the run's labels),
every step up to step {dense}, then steps {config['measure']['growth']}x apart.

![m-coherence](coherence.png)

## Whole network

{whole}

## Per layer (first, middle, last module)

{per_layer}

![accuracies](accuracy.png)
"""
  return reporting.write_markdown(out_dir, text)
