"""Plots of the experiments' runs (matplotlib, Agg backend, PNG).

Example:
  >>> plot_real_vs_random({'real': rows, 'random': rows2}, '/tmp/rvr.png')
"""

from typing import Any, Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

COLORS = {'real': 'tab:blue', 'random': 'tab:red'}


def plot_real_vs_random(runs: Dict[str, List[Dict[str, Any]]], path: str,
                        title: str = '') -> None:
  """m-coherence (log) per step, per module, and accuracies; real vs random."""
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  for mode, rows in runs.items():
    color = COLORS.get(mode)
    epochs = [r['epoch'] for r in rows]
    axes[0].plot(epochs, [r['m_coherence'] for r in rows], '.-', color=color,
                 label=f'{mode} labels')
    for style, module in zip(('-', '--', ':', '-.'), sorted(rows[0]['modules'])):
      axes[1].plot(epochs, [r['modules'][module] for r in rows], style,
                   color=color, label=f'{mode}: {module}')
    axes[2].plot(epochs, [r['train_accuracy'] for r in rows], '-', color=color,
                 label=f'{mode}: train')
    axes[2].plot(epochs, [r['test_accuracy'] for r in rows], '--', color=color,
                 label=f'{mode}: test')
  for ax, ylabel in zip(axes, ('m-coherence (whole network)',
                               'm-coherence per module', 'accuracy')):
    ax.set_xscale('symlog', linthresh=1.0)
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  for ax in axes[:2]:
    ax.set_yscale('log')
    ax.axhline(1.0, color='gray', lw=0.8)
  fig.suptitle(title or 'Coherence of per-example gradients: real vs random labels')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_noisy_labels(runs: Dict[str, List[Dict[str, Any]]], path: str,
                      title: str = '') -> None:
  """Pristine, corrupt (memorization) and test accuracy per aggregator."""
  panels = (('pristine_accuracy', 'pristine train accuracy'),
            ('corrupt_accuracy', 'corrupt train accuracy (noisy labels)'),
            ('test_accuracy', 'test accuracy'))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), sharex=True)
  cmap = plt.get_cmap('tab10')
  for i, (spec, rows) in enumerate(runs.items()):
    steps = [r['step'] for r in rows]
    for ax, (key, _) in zip(axes, panels):
      ax.plot(steps, [r[key] for r in rows], '-', color=cmap(i % 10),
              label=spec, lw=1.6 if spec == 'mean' else 1.1)
  for ax, (_, panel_title) in zip(axes, panels):
    ax.set_title(panel_title)
    ax.set_xlabel('step')
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
  axes[1].legend(fontsize=8, ncol=2)
  fig.suptitle(title or 'Noisy labels: memorization under robust aggregation')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
