"""The supervised-run core of the paper experiments: data, noise, net, fit, measure.

One run = one noisy-label training set, one network, one optimizer spec, the
resumable `loop.run` over `data.batch_indices`, and measurements of
accuracies (train / pristine / corrupt / test, per example for records) and
of m-coherence on a fixed sample (whole network and per module). The
experiments (coherence_evolution, learning_order, easy_hard,
stability_bound, noisy_median) differ only in what they sweep and measure.

Config fields read here (see any experiment's configs/default.py):
  seed, data.{name, split_seed}, model.{name, widths},
  noise.{kind, seed} (p per run), train.{aggregator, learning_rate, momentum,
  batch_size, epochs, checkpoint_every_epochs}, mesh.data.

Example:
  >>> s = setup(config)
  >>> noisy = load_noise(run_dir, s, kind='uniform', p=0.5, seed=1)
  >>> rows = fit(run_dir, config, s, noisy['label'], measure=..., measure_steps={0, 40})
"""

import math
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np

from coherence_jax import data as cj_data
from coherence_jax import sharding
from experiments.common import aggregator_specs
from experiments.common import data
from experiments.common import distributed
from experiments.common import files
from experiments.common import loop
from experiments.common import nets
from experiments.common import run_config
from experiments.common import train_step as train_step_lib
from experiments.common import validation

NOISE_KINDS = ('permute', 'uniform')
METHODS = ('auto', 'ghost', 'vmap')
Row = Dict[str, Any]


class Setup(NamedTuple):
  """What every run of an experiment shares (compiled functions included)."""
  config: ml_collections.ConfigDict
  dataset: data.Dataset
  net: nets.Net
  mesh: jax.sharding.Mesh
  trainers: Dict[str, train_step_lib.Trainer]  # by aggregator spec, cached

  @property
  def train_size(self) -> int:
    return int(self.dataset['train']['label'].shape[0])

  def trainer(self, spec: str) -> train_step_lib.Trainer:
    """The (cached) trainer of an aggregator spec, e.g. 'mean' or 'rm3'."""
    if spec not in self.trainers:
      t = self.config.train
      self.trainers[spec] = train_step_lib.make_trainer(
          *aggregator_specs.build(spec, self.net.loss_fn, t.learning_rate,
                                  t.get('momentum', None)), mesh=self.mesh)
    return self.trainers[spec]


def validate_common(config: ml_collections.ConfigDict,
                    dataset: data.Dataset) -> None:
  """ValueError naming the first bad shared field (nothing is written)."""
  train_size = int(dataset['train']['label'].shape[0])
  validation.positive_int(config, 'seed', minimum=0)
  nets.check_name(config.model.name)
  if config.model.name == 'mlp':
    widths = tuple(config.model.widths)
    size = data.input_size(dataset)
    validation.check(
        len(widths) >= 2 and all(isinstance(w, int) and w >= 1
                                 for w in widths)
        and widths[0] == size and widths[-1] == data.NUM_CLASSES,
        'model.widths', widths, f'pass ({size}, hidden..., '
        f'{data.NUM_CLASSES}): the input pixels of {config.data.name}, '
        'positive hidden widths, the classes')
  t = config.train
  for field, value in (('learning_rate', t.learning_rate),
                       ('momentum', t.get('momentum', 0.0) or 0.0)):
    validation.check(isinstance(value, (int, float)) and math.isfinite(value)
                     and value >= 0 and (field != 'learning_rate' or value > 0),
                     f'train.{field}', value, 'pass a finite number (> 0 for '
                     'the learning rate, >= 0 for momentum)')
  validation.positive_int(config, 'train.epochs')
  validation.positive_int(config, 'train.checkpoint_every_epochs')
  validation.check(isinstance(t.batch_size, int) and
                   1 <= t.batch_size <= train_size, 'train.batch_size',
                   t.batch_size, f'pass 1..{train_size} (the training set)')
  validation.check(config.noise.kind in NOISE_KINDS, 'noise.kind',
                   config.noise.kind, f'pass one of {NOISE_KINDS}')
  validation.positive_int(config, 'noise.seed', minimum=0)
  validation.check_mesh(config)


def check_fraction(config: ml_collections.ConfigDict, field: str,
                   values: Sequence[Any]) -> None:
  """config.<field> holds distinct probabilities in [0, 1]."""
  values = tuple(values)
  validation.check(
      len(values) >= 1 and len(set(values)) == len(values) and all(
          isinstance(p, (int, float)) and 0 <= p <= 1 for p in values),
      field, values, 'pass distinct label-noise fractions in [0, 1]')


def setup(config: ml_collections.ConfigDict,
          extra_checks: Optional[Callable[[ml_collections.ConfigDict,
                                           data.Dataset], None]] = None,
          workdir: Optional[str] = None) -> Setup:
  """Loads the data, validates, saves config.json and builds the net.

  Args:
    config: the experiment config.
    extra_checks: the experiment's own `validate(config, dataset)`.
    workdir: if given, `run_config.check_and_save(config, workdir)`.
  """
  data.check_name(config.data.name)
  nets.check_name(config.model.name)
  dataset = data.load(config.data.name, config.data.split_seed)
  validate_common(config, dataset)
  if extra_checks is not None:
    extra_checks(config, dataset)
  if workdir is not None:
    run_config.check_and_save(config, workdir, distributed.is_writer())
  image_shape = dataset['train']['image'].shape[1:]
  classes = (data.num_classes(config.data.name)
             if hasattr(data, 'num_classes') else data.NUM_CLASSES)
  net = nets.make(config.model, image_shape, classes, config.seed)
  return Setup(config, dataset, net, distributed.make_mesh(config.mesh.data),
               {})


def noisy_labels(labels: np.ndarray, kind: str, p: float,
                 seed: int) -> Dict[str, np.ndarray]:
  """{'label', 'selected', 'corrupt'}: p = 0 keeps every label.

  'permute': the ICLR 2020 rule (pick with probability p, permute the picked
  labels); 'uniform': 2003.07422 / 2008.01217 (a uniform class with
  probability p). 'corrupt' = the label actually changed.
  """
  labels = np.asarray(labels)
  if p == 0:
    none = np.zeros(labels.shape, bool)
    return {'label': labels, 'selected': none, 'corrupt': none.copy()}
  if kind == 'permute':
    return cj_data.corrupt_labels(labels, p, seed)
  if kind == 'uniform':
    return cj_data.random_labels(labels, data.NUM_CLASSES, p=p, seed=seed)
  raise ValueError(f'config.noise.kind: got {kind!r}; pass one of '
                   f'{NOISE_KINDS}.')


def load_noise(run_dir: str, s: Setup, kind: str, p: float,
               seed: int) -> Dict[str, np.ndarray]:
  """The run's noisy labels, drawn once and kept in run_dir/corruption.npz.

  A run_dir holding labels drawn with another (kind, p, seed) is refused.
  """
  npz, meta = (os.path.join(run_dir, 'corruption.npz'),
               os.path.join(run_dir, 'corruption.json'))
  wanted = {'kind': kind, 'p': p, 'seed': seed}
  if os.path.exists(npz):
    saved = files.read_json(meta)
    if {k: saved[k] for k in wanted} != wanted:
      raise ValueError(f'config.noise: got {wanted}; {run_dir} holds labels '
                       f'drawn with {saved}: pass a new --workdir.')
    with np.load(npz) as arrays:
      return dict(arrays)
  out = noisy_labels(s.dataset['train']['label'], kind, p, seed)
  if distributed.is_writer():
    os.makedirs(run_dir, exist_ok=True)
    files.write_json(meta, {**wanted,
                            'selected_fraction': float(out['selected'].mean()),
                            'corrupt_fraction': float(out['corrupt'].mean())})
    files.write_npz(npz, **out)
  return out


def params_of(state: Any) -> Any:
  """The params of a trainer state on this process's first device."""
  return distributed.local_copy(state['params'])


def accuracy_row(correct: np.ndarray, loss: np.ndarray,
                 corrupt: np.ndarray) -> Row:
  """Train, pristine and corrupt (w.r.t. the noisy labels) accuracy and loss.

  >>> accuracy_row(np.array([1, 0, 1], bool), np.array([.1, 2., .3]),
  ...              np.array([False, True, False]))['corrupt_accuracy']
  0.0
  """
  def mean(x):
    return float(np.mean(x)) if x.size else math.nan
  return {'train_accuracy': mean(correct), 'train_loss': mean(loss),
          'pristine_accuracy': mean(correct[~corrupt]),
          'corrupt_accuracy': mean(correct[corrupt])}


class Evaluator:
  """Per-example correctness and loss of a split, cached for one step.

  `at(state, step)` evaluates once per step, so the records update and the
  metrics row of the same measurement share one forward pass.
  """

  def __init__(self, net: nets.Net, images: np.ndarray, labels: np.ndarray):
    device = jax.local_devices()[0]
    self.net = net
    self.images, self.labels = jax.device_put((np.asarray(images),
                                               np.asarray(labels)), device)
    self._cached = (None, None)

  def at(self, state: Any, step: int):
    if self._cached[0] != step:
      self._cached = (step, self.net.evaluate(params_of(state), self.images,
                                              self.labels))
    return self._cached[1]


def coherence_row(s: Setup, state: Any, sample: Dict[str, np.ndarray],
                  microbatch_size: int, method: str = 'auto') -> Row:
  """m-coherence of a fixed sample: whole network and per module.

  Returns:
    'm_coherence', 'alpha', 'alpha_unbiased' (self-term-free α̂),
    'gradient_diversity', 'mean_sq_norm' (Q / m, the mean ‖g_i‖²),
    'modules' {name: m-coherence} and 'shares' {name: Q_l / Q}.
  """
  stats = sharding.sharded_coherence_stats(
      s.net.loss_fn, state['params'], sample, s.mesh,
      microbatch_size=microbatch_size, method=method)
  numbers = stats.report()
  return {
      'm_coherence': numbers['m_coherence'], 'alpha': numbers['alpha'],
      'alpha_unbiased': numbers['alpha_unbiased'],
      'gradient_diversity': numbers['gradient_diversity'],
      'mean_sq_norm': float(sum(jax.device_get(
          jax.tree.leaves(stats.sq_norms())))) / max(numbers['count'], 1),
      'modules': {k: v['m_coherence'] for k, v in numbers['modules'].items()},
      'shares': {k: v['share'] for k, v in numbers['modules'].items()},
  }


def steps_per_epoch(s: Setup, train_size: Optional[int] = None) -> int:
  return (train_size or s.train_size) // s.config.train.batch_size


def fit(run_dir: str, s: Setup, labels: np.ndarray, *,
        measure: Callable[[Any, int], Row], measure_steps: Sequence[int],
        spec: Optional[str] = None, epochs: Optional[int] = None,
        train_indices: Optional[np.ndarray] = None,
        records: Optional[Dict[str, np.ndarray]] = None,
        update_records: Optional[Callable[[Any, Any, int], Any]] = None,
        on_step: Optional[Callable[[int], None]] = None,
        log: Optional[Callable[[Row], None]] = None,
        name: str = '', checkpoint_every: Optional[int] = None) -> List[Row]:
  """Trains one run in `run_dir` (resuming) and returns its metric rows.

  Args:
    run_dir: the run's directory (metrics.jsonl, checkpoints/, records.npz).
    s: the experiment's `setup`.
    labels: the (noisy) training labels, [N].
    measure: `measure(state, step) -> row` (see `loop.run`).
    measure_steps: the steps to measure at.
    spec: the aggregator (default config.train.aggregator).
    epochs: default config.train.epochs.
    train_indices: train on these examples only (default: all N).
    records, update_records: per-example records (see `loop.run`).
    on_step: called before each step (tests simulate crashes with it).
    log: called with each new row.
    name: the run's name in progress lines.
    checkpoint_every: steps between checkpoints (default
      config.train.checkpoint_every_epochs epochs of this run).
  """
  config = s.config
  trainer = s.trainer(spec or config.train.aggregator)
  images = np.asarray(s.dataset['train']['image'])
  labels = np.asarray(labels)
  pool = (np.arange(len(labels)) if train_indices is None
          else np.asarray(train_indices))
  size, batch_size = len(pool), config.train.batch_size
  if batch_size > size:
    raise ValueError(f'config.train.batch_size: got {batch_size}; the run '
                     f'{name or run_dir} trains on {size} examples: pass '
                     f'<= {size}.')
  per_epoch = size // batch_size
  total = per_epoch * (epochs or config.train.epochs)

  def train_step(state, step):
    idx = pool[data.batch_indices(config.seed, step, batch_size, size)]
    return trainer.step(state, {'image': images[idx], 'label': labels[idx]})

  return loop.run(
      run_dir, state=trainer.init(s.net.params), total_steps=total,
      train_step=train_step, measure=measure,
      measure_steps=set(int(m) for m in measure_steps if m <= total) | {total},
      checkpoint_every=(checkpoint_every
                        or per_epoch * config.train.checkpoint_every_epochs),
      on_step=on_step, log=log, place=trainer.place,
      writer=distributed.is_writer(), records=records,
      update_records=update_records, name=name or os.path.basename(run_dir))


def total_steps(s: Setup, epochs: Optional[int] = None,
                train_size: Optional[int] = None) -> int:
  """Steps of a run of `epochs` (default config.train.epochs)."""
  return steps_per_epoch(s, train_size) * (epochs or s.config.train.epochs)


def noise_dir(p: float) -> str:
  """0.25 -> 'noise_0.25' (a run directory name)."""
  return f'noise_{p:.2f}'


def sweep_noise_levels(config: ml_collections.ConfigDict, workdir: str,
                       validate: Callable[..., None],
                       run_level: Callable[..., Dict[str, Any]],
                       write_report: Callable[[str], Any],
                       on_step: Optional[Callable[[int], None]] = None
                       ) -> Dict[str, Dict[str, Any]]:
  """`run_level(s, workdir, p, on_step)` for every p of config.noise.levels.

  Returns {noise_<p>: summary}; process 0 also writes workdir/summary.json
  and the report (`write_report(workdir)`).
  """
  s = setup(config, validate, workdir)
  summary = {noise_dir(p): run_level(s, workdir, p, on_step)
             for p in config.noise.levels}
  if distributed.is_writer():
    files.write_json(os.path.join(workdir, 'summary.json'), summary)
    write_report(workdir)
  return summary


def finished_summary(run_dir: str) -> Optional[Dict[str, Any]]:
  """run_dir/summary.json if the run has finished, else None."""
  path = os.path.join(run_dir, 'summary.json')
  return files.read_json(path) if os.path.exists(path) else None


def sample_of(images: np.ndarray, labels: np.ndarray,
              indices: np.ndarray) -> Dict[str, np.ndarray]:
  """{'image', 'label'} of the given examples (a fixed measurement sample)."""
  return {'image': np.asarray(images)[indices],
          'label': np.asarray(labels)[indices]}


def fixed_sample(seed: int, size: int, count: int) -> np.ndarray:
  """`count` example indices drawn once from `seed` (sorted)."""
  return np.sort(np.random.default_rng([seed, 7]).choice(size, count,
                                                          replace=False))


def test_split(s: Setup):
  """(images, labels) of the test split."""
  return s.dataset['test']['image'], s.dataset['test']['label']
