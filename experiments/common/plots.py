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


def _noise_colors(labels):
  cmap = plt.get_cmap('viridis')
  n = max(len(labels) - 1, 1)
  return {label: cmap(0.9 * i / n) for i, label in enumerate(labels)}


def plot_coherence_evolution(runs: Dict[str, List[Dict[str, Any]]],
                             layers: Dict[str, str], path: str,
                             title: str = '') -> None:
  """m-coherence vs step (log-log): whole network and the picked layers.

  Args:
    runs: {run label: rows with 'step', 'm_coherence', 'modules'}.
    layers: {'first': module, 'middle': module, 'last': module}.
    path: the PNG to write.
    title: the figure title.
  """
  panels = [('whole network', None)] + [(f'{k} layer ({v})', v)
                                        for k, v in layers.items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2),
                           sharey=True)
  colors = _noise_colors(list(runs))
  for label, rows in runs.items():
    steps = [r['step'] + 1 for r in rows]
    for ax, (_, module) in zip(axes, panels):
      values = [r['m_coherence'] if module is None else r['modules'][module]
                for r in rows]
      ax.plot(steps, values, '-', color=colors[label], label=label, lw=1.3)
  for ax, (panel_title, _) in zip(axes, panels):
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.axhline(1.0, color='gray', lw=0.8)
    ax.set_title(panel_title)
    ax.set_xlabel('step + 1')
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel('m-coherence of the fixed sample')
  axes[0].legend(fontsize=8)
  fig.suptitle(title or 'Evolution of m-coherence')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_accuracy_panels(runs: Dict[str, List[Dict[str, Any]]], path: str,
                         keys=('train_accuracy', 'corrupt_accuracy',
                               'test_accuracy'),
                         title: str = '', log_x: bool = False,
                         marks: Dict[str, Dict[str, float]] = None) -> None:
  """One panel per accuracy key, one line per run; optional vertical marks.

  Args:
    runs: {run label: rows with 'step' and the keys}.
    path: the PNG to write.
    keys: the row keys to plot (values in [0, 1]; nan is skipped).
    title: the figure title.
    log_x: log-scaled steps (plots step + 1).
    marks: {run label: {mark name: step}} drawn as dotted lines.
  """
  fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2),
                           sharex=True)
  axes = [axes] if len(keys) == 1 else axes
  cmap = plt.get_cmap('tab10')
  for i, (label, rows) in enumerate(runs.items()):
    steps = [r['step'] + (1 if log_x else 0) for r in rows]
    for ax, key in zip(axes, keys):
      ax.plot(steps, [r.get(key, float('nan')) for r in rows], '-',
              color=cmap(i % 10), label=label, lw=1.3)
      for j, (name, step) in enumerate(((marks or {}).get(label) or {}).items()):
        if step is not None:
          ax.axvline(step + (1 if log_x else 0), color=cmap(i % 10),
                     ls=(':', '--')[j % 2], lw=1.0)
  for ax, key in zip(axes, keys):
    ax.set_title(key.replace('_', ' '))
    ax.set_xlabel('step + 1' if log_x else 'step')
    ax.set_ylim(-0.02, 1.02)
    if log_x:
      ax.set_xscale('log')
    ax.grid(True, alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_learning_order(panels: Dict[str, Dict[str, Any]], total_steps: int,
                        path: str, marks: Dict[str, float] = None,
                        title: str = '', bins: int = 40) -> None:
  """Histograms of per-example steps, one panel per record, one color per group.

  Args:
    panels: {panel title: {group: int array of steps, -1 = never}}.
    total_steps: the run's last step (the histograms' range).
    path: the PNG to write.
    marks: {name: step} drawn as vertical lines (best test, onset, ...).
    title: the figure title.
    bins: histogram bins over [0, total_steps].
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5),
                           squeeze=False)
  edges = np.linspace(0, total_steps, bins + 1)
  colors = {'pristine': 'tab:blue', 'corrupt': 'tab:red'}
  for ax, (panel, groups) in zip(axes[0], panels.items()):
    for group, steps in groups.items():
      steps = np.asarray(steps)
      ax.hist(steps[steps >= 0], bins=edges, alpha=0.55,
              color=colors.get(group),
              label=f'{group} ({np.sum(steps >= 0)} of {steps.size})')
    for i, (name, step) in enumerate((marks or {}).items()):
      if step is not None:
        ax.axvline(step, color='k', ls=(':', '--', '-.')[i % 3], lw=1.2,
                   label=f'{name}: step {step}')
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_ylabel('examples')
    ax.set_title(panel)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
  fig.suptitle(title or 'When each training example is learnt')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_bound_vs_gap(runs: Dict[str, Dict[str, Any]], path: str,
                      title: str = '') -> None:
  """The α-factor of the stability bound and the measured gaps.

  Args:
    runs: {run label: {'step': [...], 'factor': [...], 'saving': [...],
      'loss_gap': [...], 'accuracy_gap': [...]}}; 'saving' is
      sqrt(2)·Σ η − factor, what coherence takes off the incoherent maximum.
    path: the PNG to write.
    title: the figure title.
  """
  fig, axes = plt.subplots(1, 4, figsize=(21, 4.4))
  colors = _noise_colors(list(runs))
  for label, run in runs.items():
    c = colors[label]
    axes[0].plot(run['step'], run['factor'], '-', color=c, label=label)
    axes[1].plot(run['step'], run['saving'], '-', color=c, label=label)
    axes[2].plot(run['step'], run['loss_gap'], '-', color=c, label=label)
    axes[2].plot(run['step'], run['accuracy_gap'], ':', color=c)
    axes[3].plot(run['factor'], run['loss_gap'], '.-', color=c, label=label,
                 ms=3)
  axes[0].set_title('F_t = Σ η·sqrt(2(1−α̂)) (α-dependent factor)')
  axes[0].set_xlabel('step')
  axes[1].set_title('√2·Σ η − F_t (what coherence saves)')
  axes[1].set_xlabel('step')
  axes[2].set_title('gap: test − train loss (—), train − test acc. (⋯)')
  axes[2].set_xlabel('step')
  axes[3].set_title('loss gap vs the factor')
  axes[3].set_xlabel('F_t')
  axes[3].set_ylabel('test − train loss')
  for ax in axes:
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title or 'Stability bound (2203.10036): α-factor vs measured gap')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_bars(groups: Dict[str, Dict[str, float]], path: str, ylabel: str,
              title: str = '') -> None:
  """Grouped bars: {group: {bar label: value}}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4.5))
  names = list(groups)
  bars = list(next(iter(groups.values()))) if groups else []
  width = 0.8 / max(len(bars), 1)
  cmap = plt.get_cmap('tab10')
  for j, bar in enumerate(bars):
    values = [groups[n].get(bar, float('nan')) for n in names]
    pos = np.arange(len(names)) + (j - (len(bars) - 1) / 2) * width
    ax.bar(pos, values, width, label=bar, color=cmap(j % 10))
    for x, v in zip(pos, values):
      ax.text(x, v + 0.01, f'{v:.2f}', ha='center', fontsize=7)
  ax.set_xticks(np.arange(len(names)), names)
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1.08)
  ax.legend(fontsize=8)
  ax.grid(True, axis='y', alpha=0.3)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
