"""What a grokking run reports: its events, phases, tables and plot.

Events: memorization (first step with train accuracy >= 0.99) and
generalization ("grokking": the first step at or after memorization with
held-out accuracy >= 0.95). They cut the run into three phases, memorizing /
memorized / generalized, over which the m-coherence of the two fixed samples
is summarized (medians). Modules are grouped (embeddings, attention, mlp,
norms, head); a group's m-coherence is exact from its modules' m-coherence
and shares Q_l / Q: m_G = Σ_l share_l·m_l / Σ_l share_l = Σ‖S_l‖² / Σ Q_l.

Example:
  >>> summary = summarize(rows)
  >>> summary['memorization_step'], summary['grokking_step']
  (120, 900)
  >>> plot(rows, summary, '/tmp/grokking.png')
"""

import math
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

Row = Dict[str, Any]
MEMORIZED = 0.99    # train accuracy
GENERALIZED = 0.95  # held-out accuracy
PHASES = ('memorizing', 'memorized', 'generalized')
GROUPS = ('embeddings', 'attention', 'mlp', 'norms', 'head')
SAMPLES = ('train', 'heldout')
_EVENT_KEYS = ('train_accuracy', 'test_accuracy', 'train_loss', 'test_loss',
               'train_m_coherence', 'heldout_m_coherence', 'param_norm')


def first_step(rows: List[Row], key: str, threshold: float,
               after: int = 0) -> Optional[int]:
  """The first row's step >= `after` with row[key] >= threshold, or None.

  >>> first_step([{'step': 0, 'a': .1}, {'step': 5, 'a': .9}], 'a', .5)
  5
  """
  return next((r['step'] for r in rows
               if r['step'] >= after and r[key] >= threshold), None)


def phase_of(step: int, memorized: Optional[int],
             generalized: Optional[int]) -> str:
  """'memorizing' before memorization, 'generalized' from grokking on.

  >>> [phase_of(s, 10, 50) for s in (0, 10, 49, 50)]
  ['memorizing', 'memorized', 'memorized', 'generalized']
  """
  if memorized is None or step < memorized:
    return 'memorizing'
  if generalized is None or step < generalized:
    return 'memorized'
  return 'generalized'


def module_group(name: str) -> str:
  """The group of a module path of the Transformer.

  >>> [module_group(n) for n in ('pos_embed', 'blocks/0/attn/query',
  ...                            'blocks/0/mlp_in', 'final_norm', 'head')]
  ['embeddings', 'attention', 'mlp', 'norms', 'head']
  """
  last = name.rpartition('/')[2]
  if last.endswith('norm'):
    return 'norms'
  if '/attn/' in name or last == 'attn':
    return 'attention'
  if last.startswith('mlp'):
    return 'mlp'
  if name in ('embed', 'pos_embed'):
    return 'embeddings'
  return 'head' if name == 'head' else 'other'


def group_m_coherence(modules: Dict[str, Dict[str, float]]
                      ) -> Dict[str, float]:
  """{group: m-coherence} from {module: {'m_coherence', 'share'}} (exact).

  >>> group_m_coherence({'embed': {'m_coherence': 2., 'share': .25},
  ...                    'pos_embed': {'m_coherence': 4., 'share': .25},
  ...                    'head': {'m_coherence': 1., 'share': .5}})
  {'embeddings': 3.0, 'head': 1.0}
  """
  acc: Dict[str, List[float]] = {}
  for name, entry in modules.items():
    s2_q = acc.setdefault(module_group(name), [0.0, 0.0])
    s2_q[0] += entry['m_coherence'] * entry['share']
    s2_q[1] += entry['share']
  return {g: (v[0] / v[1] if v[1] > 0 else float('nan'))
          for g, v in acc.items()}


def _median(values: Sequence[float]) -> Optional[float]:
  return float(np.median(values)) if len(values) else None


def summarize(rows: List[Row]) -> Dict[str, Any]:
  """The run's events, per-phase medians and endpoints (JSON-ready).

  Args:
    rows: the run's metric rows in step order (see train.measure).

  Returns:
    {'memorization_step', 'grokking_step' (None if not reached), 'steps',
     'seconds', 'initial' and 'final' (row numbers at the first and last
     step), 'peak' (largest m-coherence of each sample and its step),
     'phases': {phase: {'first_step', 'last_step', 'measurements', medians of
     accuracies and m-coherence, 'groups': {sample: {group: median}}}},
     'spikes': the measurements after memorization whose train accuracy fell
     back below 0.99 (loss spikes) with their median m-coherence, and
     'between_spikes': the median m-coherence of the other ones}.
  """
  memorized = first_step(rows, 'train_accuracy', MEMORIZED)
  generalized = (None if memorized is None else
                 first_step(rows, 'test_accuracy', GENERALIZED, memorized))
  phases = {}
  for phase in PHASES:
    members = [r for r in rows
               if phase_of(r['step'], memorized, generalized) == phase]
    if not members:
      continue
    entry = {'first_step': members[0]['step'], 'last_step': members[-1]['step'],
             'measurements': len(members)}
    for key in _EVENT_KEYS:
      entry[key] = _median([r[key] for r in members])
    entry['groups'] = {}
    for sample in SAMPLES:
      per_row = [group_m_coherence(r[f'{sample}_modules']) for r in members]
      entry['groups'][sample] = {g: _median([d[g] for d in per_row])
                                 for g in per_row[0]}
    phases[phase] = entry
  after = [] if memorized is None else [r for r in rows
                                         if r['step'] > memorized]
  spikes = [r for r in after if r['train_accuracy'] < MEMORIZED]
  calm = [r for r in after if r['train_accuracy'] >= MEMORIZED]
  peak = {}
  for sample in SAMPLES:
    best = max(rows, key=lambda r, s=sample: r[f'{s}_m_coherence'])
    peak[sample] = {'m_coherence': best[f'{sample}_m_coherence'],
                    'step': best['step']}
  return {
      'memorization_step': memorized,
      'grokking_step': generalized,
      'steps': rows[-1]['step'],
      'seconds': rows[-1]['seconds'],
      'initial': {k: rows[0][k] for k in _EVENT_KEYS},
      'final': {k: rows[-1][k] for k in _EVENT_KEYS},
      'peak': peak,
      'phases': phases,
      'spikes': {
          'steps': [r['step'] for r in spikes],
          **{f'{sample}_m_coherence': _median(
              [r[f'{sample}_m_coherence'] for r in spikes])
             for sample in SAMPLES}},
      'between_spikes': {
          f'{sample}_m_coherence': _median(
              [r[f'{sample}_m_coherence'] for r in calm])
          for sample in SAMPLES},
  }


def _fmt(x: Any, digits: int = 3) -> str:
  if x is None:
    return '—'
  if isinstance(x, float) and not math.isfinite(x):
    return 'nan'
  return f'{x:.{digits}f}' if isinstance(x, float) else str(x)


def format_summary_table(summary: Dict[str, Any]) -> str:
  """Markdown: one row per phase (medians over its measurements)."""
  lines = ['| phase | steps | measurements | train acc. | held-out acc. | '
           'm-coherence train | m-coherence held-out |',
           '|---|---|---:|---:|---:|---:|---:|']
  for phase, e in _phases(summary):
    lines.append(
        f'| {phase} | {e["first_step"]}–{e["last_step"]} | '
        f'{e["measurements"]} | {_fmt(e["train_accuracy"])} | '
        f'{_fmt(e["test_accuracy"])} | {_fmt(e["train_m_coherence"], 2)} | '
        f'{_fmt(e["heldout_m_coherence"], 2)} |')
  return '\n'.join(lines)


def _phases(summary: Dict[str, Any]):
  """(phase, entry) in run order (a JSON round trip sorts the keys)."""
  return [(p, summary['phases'][p]) for p in PHASES if p in summary['phases']]


def _groups_table(summary: Dict[str, Any]) -> str:
  phases = _phases(summary)
  lines = ['| group | ' + ' | '.join(p for p, _ in phases) + ' |',
           '|---|' + '---:|' * len(phases)]
  groups = [g for g in GROUPS + ('other',)
            if any(g in e['groups']['train'] for _, e in phases)]
  for g in groups:
    cells = [f'{_fmt(e["groups"]["train"].get(g), 2)} / '
             f'{_fmt(e["groups"]["heldout"].get(g), 2)}' for _, e in phases]
    lines.append(f'| {g} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def selected_rows(rows: List[Row], summary: Dict[str, Any],
                  count: int = 16) -> List[Row]:
  """About `count` rows at log-spaced steps, plus the event steps and the last."""
  last = rows[-1]['step']
  wanted = {0, last} | {int(round(x)) for x in np.geomspace(1, max(last, 1),
                                                            count)}
  wanted |= {s for s in (summary['memorization_step'],
                         summary['grokking_step']) if s is not None}
  by_step = {r['step']: r for r in rows}
  nearest = {min(by_step, key=lambda s, t=t: (abs(s - t), s)) for t in wanted}
  return [by_step[s] for s in sorted(nearest)]


def _rows_table(rows: List[Row], summary: Dict[str, Any]) -> str:
  lines = ['| step | train acc. | held-out acc. | train loss | held-out loss | '
           'm-coh. train | m-coh. held-out | ‖params‖ |',
           '|---:|---:|---:|---:|---:|---:|---:|---:|']
  events = {summary['memorization_step']: ' (memorized)',
            summary['grokking_step']: ' (generalized)'}
  for r in selected_rows(rows, summary):
    lines.append(
        f'| {r["step"]}{events.get(r["step"], "")} | '
        f'{r["train_accuracy"]:.3f} | {r["test_accuracy"]:.3f} | '
        f'{r["train_loss"]:.2e} | {r["test_loss"]:.2e} | '
        f'{r["train_m_coherence"]:.2f} | {r["heldout_m_coherence"]:.2f} | '
        f'{r["param_norm"]:.1f} |')
  return '\n'.join(lines)


def title(config) -> str:
  """'(a + b) mod p, N% of pairs for training, ...' from a run's config."""
  return (f'Grokking (a + b) mod {config.data.modulus}: '
          f'{100 * config.data.train_fraction:.0f}% of pairs for training, '
          f'{config.model.num_layers}-layer transformer, d_model '
          f'{config.model.d_model}, AdamW lr {config.train.learning_rate:g}, '
          f'wd {config.train.weight_decay:g}')


def format_report(rows: List[Row], summary: Dict[str, Any], config) -> str:
  """The run's markdown report: setup, events, phases, groups, rows, plot."""
  m, t = config.measure, config.train
  batch = 'full batch' if t.batch_size == -1 else f'batch {t.batch_size}'
  seconds = summary['seconds']
  lines = [
      f'# {title(config)}', '',
      f'{summary["steps"]:,} steps ({batch}, betas ({t.b1:g}, {t.b2:g}), '
      f'{t.warmup_steps} warm-up steps), {seconds:.0f} s. m-coherence of '
      f'per-example gradients on FIXED samples of {m.sample_size} '
      f'training pairs and {m.held_out_sample_size} held-out pairs '
      f"(method '{m.method}'), at {len(rows)} log-spaced steps.", '',
      f'- memorized (train accuracy ≥ {MEMORIZED}): step '
      f'{_fmt(summary["memorization_step"])}',
      f'- generalized (held-out accuracy ≥ {GENERALIZED}): step '
      f'{_fmt(summary["grokking_step"])}',
      f'- peak m-coherence: train {summary["peak"]["train"]["m_coherence"]:.2f}'
      f' (step {summary["peak"]["train"]["step"]}), held-out '
      f'{summary["peak"]["heldout"]["m_coherence"]:.2f} (step '
      f'{summary["peak"]["heldout"]["step"]})',
      f'- loss spikes after memorization (train accuracy back below '
      f'{MEMORIZED}): {len(summary["spikes"]["steps"])} measurements '
      f'(steps {", ".join(map(str, summary["spikes"]["steps"])) or "—"}); '
      f'median m-coherence there train '
      f'{_fmt(summary["spikes"]["train_m_coherence"], 2)}, held-out '
      f'{_fmt(summary["spikes"]["heldout_m_coherence"], 2)}; at the other '
      f'measurements after memorization train '
      f'{_fmt(summary["between_spikes"]["train_m_coherence"], 2)}, held-out '
      f'{_fmt(summary["between_spikes"]["heldout_m_coherence"], 2)}', '',
      '## Phases (medians over their measurements)', '',
      format_summary_table(summary), '',
      '## m-coherence per module group, train / held-out sample (medians)',
      '', _groups_table(summary), '',
      '## Selected measurements', '', _rows_table(rows, summary), '',
      '![grokking](grokking.png)', '']
  return '\n'.join(lines)


def plot(rows: List[Row], summary: Dict[str, Any], path: str,
         title: str = '') -> None:  # pylint: disable=redefined-outer-name
  """Accuracies, m-coherence (train / held-out), per group, losses; log x."""
  steps = [r['step'] for r in rows]
  fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), sharex=True)
  (acc_ax, coh_ax), (group_ax, loss_ax) = axes
  acc_ax.plot(steps, [r['train_accuracy'] for r in rows], '-',
              color='tab:blue', label='train')
  acc_ax.plot(steps, [r['test_accuracy'] for r in rows], '-',
              color='tab:orange', label='held-out')
  acc_ax.set_ylabel('accuracy')
  acc_ax.set_ylim(-0.02, 1.02)
  for sample, color, label in (('train', 'tab:blue', 'training pairs'),
                               ('heldout', 'tab:orange', 'held-out pairs')):
    coh_ax.plot(steps, [r[f'{sample}_m_coherence'] for r in rows], '.-',
                color=color, ms=3, label=label)
  coh_ax.set_ylabel('m-coherence (whole network)')
  cmap = plt.get_cmap('tab10')
  for i, group in enumerate(GROUPS):
    for sample, style in (('train', '-'), ('heldout', '--')):
      values = [group_m_coherence(r[f'{sample}_modules']).get(group)
                for r in rows]
      if all(v is None for v in values):
        continue
      group_ax.plot(steps, [np.nan if v is None else v for v in values],
                    style, color=cmap(i), lw=1.1,
                    label=group if sample == 'train' else None)
  group_ax.set_ylabel('m-coherence per group (— train, -- held-out)')
  loss_ax.plot(steps, [r['train_loss'] for r in rows], '-', color='tab:blue',
               label='train loss')
  loss_ax.plot(steps, [r['test_loss'] for r in rows], '-', color='tab:orange',
               label='held-out loss')
  loss_ax.set_yscale('log')
  loss_ax.set_ylabel('cross-entropy')
  norm_ax = loss_ax.twinx()
  norm_ax.plot(steps, [r['param_norm'] for r in rows], ':', color='k',
               label='‖params‖')
  norm_ax.set_ylabel('‖params‖ (dotted)')
  for ax in (coh_ax, group_ax):
    ax.set_yscale('log')
    ax.axhline(1.0, color='gray', lw=0.8)
  for ax in axes.flat:
    ax.set_xscale('symlog', linthresh=1.0)
    ax.set_xlim(0, max(steps[-1], 1))
    ax.grid(True, alpha=0.3)
    for key, style in (('memorization_step', ':'), ('grokking_step', '--')):
      if summary.get(key) is not None:
        ax.axvline(summary[key], color='tab:green', ls=style, lw=1)
    ax.legend(fontsize=8, loc='best')
  for ax in axes[1]:
    ax.set_xlabel('step (green: memorized ··, generalized --)')
  fig.suptitle(title or 'Coherence through grokking', fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
