"""The stability bound's α-dependent factor along a run, against the measured gap.

2203.10036's theorem (theory note, property 5): for an L-Lipschitz,
β-smooth loss and m training examples, the expected generalization gap of
T steps of SGD is at most

    (L² / m) · Σ_t Π_{k>t} (1 + η_k β) · η_t · sqrt(2 (1 − α_{t−1})).

Tracked here: only F_T = Σ_t η_t · sqrt(2 (1 − α̂_t)), with α̂ the
self-term-free coherence of a fixed training sample (α held constant over
each measurement interval: a Riemann sum, exact when measured every step).

Example:
  >>> rows = [{'step': 0, 'alpha_unbiased': 0.5}, {'step': 10, 'alpha_unbiased': 1.0}]
  >>> bound_factor(rows, 0.1)      # 10 steps of 0.1 * sqrt(2 * 0.5), then 0
  [0.0, 1.0]
"""

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting


def bound_factor(rows: Sequence[Dict[str, Any]],
                 learning_rate: float) -> List[float]:
  """F at each row's step: Σ over earlier intervals of η·steps·sqrt(2(1−α̂)).

  α̂ of a row holds until the next row; 1 − α̂ < 0 (α̂ > 1 by rounding) is
  taken as 0.
  """
  out, total = [], 0.0
  for i, r in enumerate(rows):
    if i:
      prev = rows[i - 1]
      one_minus = max(1.0 - prev['alpha_unbiased'], 0.0)
      total += learning_rate * (r['step'] - prev['step']) * math.sqrt(
          2.0 * one_minus)
    out.append(total)
  return out


def coherence_saving(rows: Sequence[Dict[str, Any]], learning_rate: float
                     ) -> List[float]:
  """sqrt(2)·Σ η − F at each row: what coherence takes off F's maximum.

  F would be sqrt(2)·η·t for orthogonal gradients (α̂ = 0).
  """
  return [math.sqrt(2.0) * learning_rate * (r['step'] - rows[0]['step']) - f
          for r, f in zip(rows, bound_factor(rows, learning_rate))]


def _gaps(rows):
  """(loss gap, accuracy gap) per row, on equally noisy test labels if kept."""
  test = 'noisy_test' if 'noisy_test_loss' in rows[0] else 'test'
  return ([r[f'{test}_loss'] - r['train_loss'] for r in rows],
          [r['train_accuracy'] - r[f'{test}_accuracy'] for r in rows])


def _spearman(x, y) -> float:
  if len(x) < 3:
    return math.nan
  rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
  if rx.std() == 0 or ry.std() == 0:
    return math.nan
  return float(np.corrcoef(rx, ry)[0, 1])


def summarize(rows: Sequence[Dict[str, Any]],
              learning_rate: float) -> Dict[str, Any]:
  """Final factor and gaps, mean α̂, and how the factor tracks the gap."""
  factor = bound_factor(rows, learning_rate)
  loss_gap, acc_gap = _gaps(rows)
  final = rows[-1]
  return {
      'final_factor': factor[-1],
      'final_coherence_saving': coherence_saving(rows, learning_rate)[-1],
      'final_loss_gap': loss_gap[-1], 'final_accuracy_gap': acc_gap[-1],
      'max_loss_gap': float(max(loss_gap)),
      'mean_alpha_unbiased': float(np.mean([r['alpha_unbiased']
                                            for r in rows])),
      'mean_m_coherence': float(np.mean([r['m_coherence'] for r in rows])),
      'max_mean_sq_norm': float(max(r['mean_sq_norm'] for r in rows)),
      'spearman_factor_vs_loss_gap': _spearman(factor, loss_gap),
      'final_train_accuracy': final['train_accuracy'],
      'final_test_accuracy': final['test_accuracy'],
      'final_noisy_test_accuracy': final.get('noisy_test_accuracy',
                                             final['test_accuracy']),
      'steps': final['step'], 'seconds': final['seconds'],
  }


def write_report(workdir: str, out_dir: Optional[str] = None) -> str:
  """report.md and bound_vs_gap.png of a sweep; the .md path."""
  out_dir = out_dir or workdir
  config = files.read_json(os.path.join(workdir, 'config.json'))
  lr = config['train']['learning_rate']
  curves, summaries = {}, {}
  for p in config['noise']['levels']:
    rows = reporting.rows_of(os.path.join(workdir, f'noise_{p:.2f}'))
    if not rows:
      continue
    label = f'{100 * p:.0f} % noise'
    loss_gap, acc_gap = _gaps(rows)
    curves[label] = {'step': [r['step'] for r in rows],
                     'factor': bound_factor(rows, lr),
                     'saving': coherence_saving(rows, lr), 'loss_gap': loss_gap,
                     'accuracy_gap': acc_gap}
    summaries[label] = summarize(rows, lr)
  plots.plot_bound_vs_gap(curves, os.path.join(out_dir, 'bound_vs_gap.png'))
  labels = list(summaries)
  by_factor = sorted(labels, key=lambda k: summaries[k]['final_factor'])
  by_gap = sorted(labels, key=lambda k: summaries[k]['final_loss_gap'])
  table = reporting.markdown_table(
      ['noise', 'F_T = Σ η sqrt(2(1−α̂))', '√2·Σ η − F_T', 'mean α̂',
       'mean m-coherence',
       'test − train loss (final / max)', 'train − test acc.',
       'Spearman(F_t, loss gap_t)', 'train / noisy test / clean test acc.',
       'max mean ‖g‖²'],
      [[k, s['final_factor'], s['final_coherence_saving'],
        f"{s['mean_alpha_unbiased']:.2e}",
        s['mean_m_coherence'],
        f"{reporting.fmt(s['final_loss_gap'])} / {reporting.fmt(s['max_loss_gap'])}",
        s['final_accuracy_gap'], s['spearman_factor_vs_loss_gap'],
        ' / '.join(reporting.fmt(s[k]) for k in (
            'final_train_accuracy', 'final_noisy_test_accuracy',
            'final_test_accuracy')), s['max_mean_sq_norm']]
       for k, s in summaries.items()])
  steps = next(iter(summaries.values()))['steps'] if summaries else 0
  m = {'mnist5k': 4000}.get(config['data']['name'], 'the training-set size')
  text = f"""# The stability bound along a run (2203.10036)

{reporting.config_line(config)} Self-term-free α̂ of a FIXED sample of
{config['measure']['sample_size']} training examples every
{config['measure']['every_steps']} steps.

The theorem bounds the expected generalization gap by
(L²/m) · Σ_t Π_{{k>t}}(1 + η_k β) · η_t · sqrt(2(1 − α_{{t−1}})).
**Only the α-dependent factor F_T = Σ_t η_t · sqrt(2(1 − α̂_t)) is tracked.**
The constants for these runs: m = {m} training examples, η = {lr} constant,
T = {steps} steps; L, the Lipschitz constant of the per-example loss in the
weights, is not bounded for cross-entropy on unbounded weights (the largest
measured mean ‖g_i‖², a lower bound on L², is in the table); β, the
smoothness constant, does not exist for ReLU networks (non-smooth), and for
any β > 0 the product Π(1 + ηβ) = (1 + ηβ)^(T−t) is astronomically large at
T = {steps} (e.g. 1.1^{steps} for ηβ = 0.1), so the bound itself is vacuous
here. What can be checked is the α-dependent factor: with α̂ ≈ 0 (incoherent
gradients) F_T ≈ η·T·√2, its maximum; coherence lowers it.

Gaps are between the (noisy) training labels and test labels noised the
same way (the theorem's gap, within one distribution); the clean test
accuracy is listed too.

Runs ordered by F_T: {' < '.join(by_factor)}; by final loss gap:
{' < '.join(by_gap)}.

{table}

![bound vs gap](bound_vs_gap.png)
"""
  return reporting.write_markdown(out_dir, text)
