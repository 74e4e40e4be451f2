"""Runs every label mode, then writes summary.json, the plot and a table."""

import os
from typing import Any, Dict

import ml_collections

from experiments import coherence_run
from experiments import jsonl
from experiments import plots

TABLE_KEYS = ('early_m_coherence', 'peak_m_coherence', 'late_peak_m_coherence',
              'late_peak_epoch', 'final_m_coherence', 'train_accuracy',
              'test_accuracy', 'seconds')


def format_table(summary: Dict[str, Dict[str, Any]]) -> str:
  modes = list(summary)
  lines = ['| metric | ' + ' | '.join(modes) + ' |',
           '|---|' + '---:|' * len(modes)]
  for key in TABLE_KEYS:
    cells = [summary[m].get(key, float('nan')) for m in modes]
    lines.append(f'| {key} | ' + ' | '.join(f'{c:.3f}' for c in cells) + ' |')
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  dataset = coherence_run.load_data(config)
  summary, runs = {}, {}
  for mode in config.label_modes:
    summary[mode] = coherence_run.run_label_mode(config, workdir, mode, dataset)
    runs[mode] = jsonl.read_rows(os.path.join(workdir, mode, 'metrics.jsonl'))
  jsonl.write_json(os.path.join(workdir, 'summary.json'), summary)
  jsonl.write_atomic(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  plots.plot_real_vs_random(runs, os.path.join(workdir, 'real_vs_random.png'))
  table = format_table(summary)
  jsonl.write_atomic(os.path.join(workdir, 'table.md'), table + '\n')
  print(table, flush=True)
  return summary
