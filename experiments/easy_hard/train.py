"""Easy vs hard examples: a split run, then fresh networks on easy / hard / random halves.

1. `workdir/split/`: train `config.train.epochs` epochs on the whole training
   set (with the run's labels); the per-example records (checkpointed) say
   which examples are classified correctly at the end: the easy ones.
2. Easy, hard and (a control) all examples are shuffled and halved, each half
   of size n (`equal_sizes`: n = min(#easy, #hard) // 2); `split.json` /
   `split.npz` keep the indices.
3. `workdir/train_<easy|hard|random>/`: a fresh network (same init) trained
   `easy_hard.subset_epochs` epochs on the first half, tested on the second
   halves of all three kinds and on the test split.
Every run resumes; the workdir gets config.json, summary.json and the report.

Example:
  >>> from experiments.easy_hard.configs import tiny
  >>> summary = train_and_evaluate(tiny.get_config(), '/tmp/easy_hard')
  >>> summary['train_easy']['final']['easy_test_accuracy']
"""

import os
from typing import Any, Callable, Dict, Optional

import ml_collections
import numpy as np

from coherence_jax import schedules
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import measure as measure_lib
from experiments.common import records as records_lib
from experiments.common import supervised
from experiments.common import validation
from experiments.easy_hard import report

KINDS = ('easy', 'hard', 'random')


def validate(config: ml_collections.ConfigDict, train_size: int) -> None:
  """ValueError naming the first bad experiment field."""
  levels = tuple(config.noise.levels)
  supervised.check_fraction(config, 'noise.levels', levels)
  validation.check(len(levels) == 1, 'noise.levels', levels,
                   'pass one noise level, e.g. (0.0,)')
  validation.positive_int(config, 'easy_hard.subset_epochs')
  validation.check(isinstance(config.easy_hard.equal_sizes, bool),
                   'easy_hard.equal_sizes', config.easy_hard.equal_sizes,
                   'pass True or False')
  # No eval_size: the split needs every training example.
  measure_lib.check(config, uses=('every_steps', 'test_eval_size',
                                  'chunk_size'), train_size=train_size)


def halves(learnt_at_end: np.ndarray, seed: int, equal_sizes: bool
           ) -> Dict[str, np.ndarray]:
  """{'<kind>_train', '<kind>_test'} index arrays for easy / hard / random.

  Args:
    learnt_at_end: [N] bool, classified correctly at the end of the split run.
    seed: the shuffling seed.
    equal_sizes: every half of size n = min(#easy, #hard) // 2; else each
      kind is halved (random: of size min(#easy, #hard) // 2).

  >>> h = halves(np.arange(10) < 6, 0, True)
  >>> [len(h[k]) for k in ('easy_train', 'hard_test', 'random_train')]
  [2, 2, 2]
  """
  rng = np.random.default_rng([seed, 11])
  pools = {'easy': np.flatnonzero(learnt_at_end),
           'hard': np.flatnonzero(~learnt_at_end),
           'random': np.arange(len(learnt_at_end))}
  n_min = min(len(pools['easy']), len(pools['hard'])) // 2
  out = {}
  for kind, pool in pools.items():
    pool = rng.permutation(pool)
    n = n_min if (equal_sizes or kind == 'random') else len(pool) // 2
    out[f'{kind}_train'], out[f'{kind}_test'] = pool[:n], pool[n:2 * n]
  return out


def split(s: supervised.Setup, workdir: str, train: supervised.Examples,
          on_step: Optional[Callable[[int], None]]) -> Dict[str, np.ndarray]:
  """The split run (resumable) and its halves, saved in split.npz.

  Every example is classified at each epoch (the records; streamed data: a
  pass over the training set, each process its slice); every process
  computes the same halves.
  """
  config = s.config
  path = os.path.join(workdir, 'split.npz')
  if os.path.exists(path):
    with np.load(path) as saved:
      return dict(saved)
  run_dir = os.path.join(workdir, 'split')
  train_eval = supervised.evaluator(s, train)
  kept = {}  # the latest records, on every process

  def update_records(state, records, step):
    kept['records'] = records_lib.update(records, train_eval.at(state, step)[0],
                                         step)
    return kept['records']

  def measure(state, step):
    return supervised.accuracy_row(*train_eval.at(state, step),
                                   np.zeros(len(train), bool))

  total = supervised.total_steps(s)
  supervised.fit(run_dir, s, train, measure=measure,
                 measure_steps=schedules.Schedule(
                     every=supervised.steps_per_epoch(s),
                     total_steps=total).steps(),
                 records=records_lib.init(s.train_size),
                 update_records=update_records, on_step=on_step, name='split')
  learnt_at_end = np.asarray(kept['records']['learnt_step']) >= 0
  out = halves(learnt_at_end, config.seed, config.easy_hard.equal_sizes)
  if min(len(v) for v in out.values()) < config.train.batch_size:
    raise ValueError(
        f'config.train.batch_size: got {config.train.batch_size}; the halves '
        f'have {min(len(v) for v in out.values())} examples '
        f'({int(learnt_at_end.sum())} easy, {int((~learnt_at_end).sum())} '
        'hard): pass a smaller batch size or change config.train.epochs.')
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'split.json'), {
        'easy': int(learnt_at_end.sum()), 'hard': int((~learnt_at_end).sum()),
        **{k: int(len(v)) for k, v in out.items()}})
    files.write_npz(path, learnt_at_end=learnt_at_end, **out)
  return {'learnt_at_end': learnt_at_end, **out}


def train_kind(s: supervised.Setup, workdir: str, kind: str,
               train: supervised.Examples, sets: Dict[str, np.ndarray],
               on_step: Optional[Callable[[int], None]]) -> Dict[str, Any]:
  """A fresh network on the `kind` train half; accuracies on every half.

  In memory every training example is classified at a measurement; streamed
  data only the examples of the halves measured.
  """
  config = s.config
  run_dir = os.path.join(workdir, f'train_{kind}')
  done = loop.finished_summary(run_dir)
  if done is not None:
    return done
  needed = None
  if train.streamed:
    needed = np.unique(np.concatenate(
        [sets[f'{kind}_train']] + [sets[f'{k}_test'] for k in KINDS]))
  train_eval = supervised.evaluator(s, train, needed)
  test_eval = supervised.evaluator(s, supervised.clean(s, 'test'),
                                   supervised.eval_indices(s, 'test'))

  def of(correct, subset):
    return correct[subset if needed is None
                   else np.searchsorted(needed, subset)]

  def measure(state, step):
    correct, _ = train_eval.at(state, step)
    row = {'train_subset_accuracy': float(
        of(correct, sets[f'{kind}_train']).mean())}
    for other in KINDS:
      row[f'{other}_test_accuracy'] = float(
          of(correct, sets[f'{other}_test']).mean())
    row['test_accuracy'] = float(test_eval.at(state, step)[0].mean())
    return row

  epochs = config.easy_hard.subset_epochs
  size = len(sets[f'{kind}_train'])
  total = supervised.total_steps(s, epochs, size)
  rows = supervised.fit(
      run_dir, s, train, measure=measure, epochs=epochs,
      measure_steps=measure_lib.steps(config.measure, total),
      train_indices=sets[f'{kind}_train'], on_step=on_step,
      name=f'train {kind}',
      # Halves are small (a few steps per epoch): checkpoint by steps.
      checkpoint_every=config.measure.every_steps)
  return loop.write_summary(run_dir, report.summarize(rows))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Any]:
  """The split run and the three subset runs; {'split', 'train_<kind>'}."""
  s = supervised.setup(config, validate, workdir)
  p = config.noise.levels[0]
  train = supervised.load_noise(workdir, s, config.noise.kind, p,
                                config.noise.seed)
  sets = split(s, workdir, train, on_step)
  learnt_at_end = sets['learnt_at_end']
  summary = {'split': {
      'easy': int(learnt_at_end.sum()), 'hard': int((~learnt_at_end).sum()),
      **{k: int(len(v)) for k, v in sets.items() if k != 'learnt_at_end'}}}
  for kind in KINDS:
    summary[f'train_{kind}'] = train_kind(s, workdir, kind, train, sets,
                                          on_step)
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    report.write_report(workdir)
  return summary
