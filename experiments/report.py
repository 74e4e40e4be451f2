r"""Reports of finished (or running) experiment workdirs: markdown + PNG plots.

  python -m experiments.report WORKDIR [WORKDIR ...] [--out=DIR]

Each WORKDIR is one run or sweep of an experiment (its config.json says
which: the `experiment` field, or the shape of the older configs). The
report (report.md and its PNGs) goes to WORKDIR itself, or to DIR (one
workdir) or DIR/<workdir name> (several). Dispatches to the experiment's
`report.write_report(workdir, out_dir)`; real_vs_random and noisy_labels,
whose report modules predate it, are written here.

Example:
  >>> write(['/tmp/coherence_evolution_tiny'], out='results/coherence_evolution')
"""

import importlib
import os
from typing import Callable, Dict, List, Optional, Sequence

from absl import app
from absl import flags

from experiments.common import files
from experiments.common import plots
from experiments.common import reporting

EXPERIMENTS = ('coherence_evolution', 'learning_order', 'easy_hard',
               'stability_bound', 'noisy_median', 'real_vs_random',
               'noisy_labels')

_OUT = flags.DEFINE_string('out', None, 'Where to write the report(s) '
                           '(default: each workdir).')


def experiment_of(config: Dict) -> str:
  """The experiment of a workdir's config.json (ValueError if unknown)."""
  name = config.get('experiment')
  if name is None and 'label_modes' in config:
    name = 'real_vs_random'
  if name is None and 'aggregators' in config and 'kind' not in config.get(
      'noise', {}):
    name = 'noisy_labels'
  if name not in EXPERIMENTS:
    raise ValueError(f'config.json: experiment {name!r} is not one of '
                     f'{EXPERIMENTS}; is this an experiment workdir?')
  return name


def _real_vs_random(workdir: str, out_dir: str) -> str:
  from experiments.real_vs_random import report  # pylint: disable=g-import-not-at-top
  config = files.read_json(os.path.join(workdir, 'config.json'))
  runs = {m: reporting.rows_of(os.path.join(workdir, m))
          for m in config['label_modes']}
  runs = {m: rows for m, rows in runs.items() if rows}
  some = next(r for rows in runs.values() for r in rows if r['epoch'] > 0)
  per_epoch = round(some['step'] / some['epoch'])
  measure = config['measure']
  # dense_epochs: a config.json written before config.measure was one block.
  dense = (measure['dense_until'] if 'dense_until' in measure
           else per_epoch * measure['dense_epochs'])
  summary = {m: report.summarize(rows, dense) for m, rows in runs.items()}
  plots.plot_real_vs_random(runs, os.path.join(out_dir, 'real_vs_random.png'))
  modules = sorted(next(iter(runs.values()))[0]['modules'],
                   key=reporting.natural_key)
  per_layer = reporting.markdown_table(
      ['labels'] + [f'{m}: {k}' for m in modules
                    for k in ('mean epoch 1', 'peak', 'final')],
      [[mode] + [v for m in modules for v in (
          sum(r['modules'][m] for r in rows if r['step'] <= dense)
          / max(1, sum(1 for r in rows if r['step'] <= dense)),
          max(r['modules'][m] for r in rows), rows[-1]['modules'][m])]
       for mode, rows in runs.items()])
  text = f"""# Real vs random labels (2203.10036 §6)

{reporting.config_line(config)} m-coherence of a FIXED sample of
{config['measure']['sample_size']} training examples (with the run's labels),
every step up to step {dense} (the first {dense / per_epoch:g} epoch(s)), then
steps {measure['growth']}x apart; 'early' = mean over that dense part.

{report.format_table(summary)}

Per module (the hidden layer(s), then the output layer):

{per_layer}

![real vs random](real_vs_random.png)
"""
  return reporting.write_markdown(out_dir, text)


def _noisy_labels(workdir: str, out_dir: str) -> str:
  from experiments.noisy_labels import report  # pylint: disable=g-import-not-at-top
  config = files.read_json(os.path.join(workdir, 'config.json'))
  noise = files.read_json(os.path.join(workdir, 'corruption.json'))
  runs = {spec: reporting.rows_of(os.path.join(workdir,
                                               spec.replace(':', '_c')))
          for spec in config['aggregators']}
  runs = {k: v for k, v in runs.items() if v}
  summary = {k: report.summarize(rows) for k, rows in runs.items()}
  plots.plot_noisy_labels(
      runs, os.path.join(out_dir, 'noisy_labels.png'),
      title=f"Noisy labels (p = {noise['p']}): memorization under robust "
      'aggregation')
  text = f"""# Noisy labels: memorization under robust aggregation (ICLR 2020, p = {noise['p']})

{reporting.config_line(config)} Labels: each example picked with
probability p = {noise['p']}, the picked labels permuted:
{100 * noise['corrupt_fraction']:.1f} % actually changed ('corrupt');
corrupt accuracy is w.r.t. the noisy labels (memorization).

{report.format_table(summary)}

![noisy labels](noisy_labels.png)
"""
  return reporting.write_markdown(out_dir, text)


_OWN: Dict[str, Callable[[str, str], str]] = {
    'real_vs_random': _real_vs_random, 'noisy_labels': _noisy_labels}


def write_one(workdir: str, out_dir: Optional[str] = None) -> str:
  """Writes the report of one workdir; returns the report.md path."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise ValueError(f'WORKDIR: {workdir} has no config.json; pass the '
                     '--workdir of an experiment run.')
  name = experiment_of(files.read_json(config_path))
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  if name in _OWN:
    return _OWN[name](workdir, out_dir)
  module = importlib.import_module(f'experiments.{name}.report')
  return module.write_report(workdir, out_dir)


def noisy_labels_across_noise(workdirs: Sequence[str], out_dir: str) -> str:
  """One table of several noisy_labels workdirs (one per noise level).

  Rows: aggregators; per noise level p: final corrupt accuracy (memorization),
  final and peak test accuracy. Written to out_dir/README.md.
  """
  from experiments.noisy_labels import report  # pylint: disable=g-import-not-at-top
  levels, cells = [], {}
  for workdir in workdirs:
    config = files.read_json(os.path.join(workdir, 'config.json'))
    p = config['noise']['p']
    levels.append(p)
    for spec in config['aggregators']:
      rows = reporting.rows_of(os.path.join(workdir, spec.replace(':', '_c')))
      if rows:
        cells.setdefault(spec, {})[p] = report.summarize(rows)
  header = ['aggregator'] + [f'p = {p}: corrupt acc. / test acc. final / '
                             'peak' for p in levels]
  table = reporting.markdown_table(header, [
      [spec] + [' / '.join(reporting.fmt(by_p[p][k]) for k in (
          'final_corrupt_accuracy', 'final_test_accuracy',
          'peak_test_accuracy')) if p in by_p else '–' for p in levels]
      for spec, by_p in cells.items()])
  names = ', '.join(f'[p = {p}]({os.path.basename(os.path.normpath(w))}/'
                    'report.md)' for p, w in zip(levels, workdirs))
  text = f"""# Noisy labels across noise levels

Final accuracy on the corrupt training examples w.r.t. their noisy labels
(memorization), final and peak test accuracy, per aggregator and noise
level p. Per-level reports: {names}.

{table}
"""
  return reporting.write_markdown(out_dir, text, name='README.md')


def write(workdirs: Sequence[str], out: Optional[str] = None) -> List[str]:
  """Reports of several workdirs: to each, to `out`, or out/<workdir name>.

  Several noisy_labels workdirs with `out` also get one table across them
  (out/README.md, `noisy_labels_across_noise`).
  """
  if not workdirs:
    raise ValueError('WORKDIR: pass at least one experiment workdir.')
  paths = []
  for workdir in workdirs:
    target = out
    if out is not None and len(workdirs) > 1:
      target = os.path.join(out, os.path.basename(os.path.normpath(workdir)))
    paths.append(write_one(workdir, target))
  kinds = {experiment_of(files.read_json(os.path.join(w, 'config.json')))
           for w in workdirs}
  if out is not None and len(workdirs) > 1 and kinds == {'noisy_labels'}:
    paths.append(noisy_labels_across_noise(workdirs, out))
  return paths


def main(argv):
  for path in write(argv[1:], _OUT.value):
    print(path, flush=True)


if __name__ == '__main__':
  app.run(main)
