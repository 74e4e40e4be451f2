"""The run core of every image experiment: setup, noise, fit, measure.

`setup(config, validate, workdir)` validates every field, saves config.json,
opens the data (`config.data`), builds the model (`config.model`, through
the models registry) and the mesh. `load_noise` draws the run's noise
(`config.noise.kind`: label kinds drawn for the whole set and kept in
corruption.npz; pixel kinds and streamed data by a per-index rule, recorded
in corruption.json). `fit` trains one run with the aggregator's trainer on
`loop.fit`, the one resumable loop; the experiment's `measure(state, step)`
says what a row holds, helped by `coherence_row`, `accuracy_row` and the
evaluators of `open_run`. With the batch-mean aggregator each measured step
also reports its own training batch ('batch_*' keys, one backward pass).

Data is held in memory (mnist5k ... cifar100) or streamed (imagenet2012, or
config.data.stream=True: read by index, each process its slice; see
experiments/common/examples.py). Either way a step's batch is a pure
function of (seed, step) and the fixed samples of (seed, sizes), so a
resumed run repeats an uninterrupted one.

Example:
  >>> s = setup(config, validate, workdir)
  >>> train = load_noise(run_dir, s, kind='uniform', p=0.5, seed=1)
  >>> rows = fit(run_dir, s, train, measure=..., measure_steps={0, 40})
"""

import math
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np

from coherence_jax import _checks
from coherence_jax import data as cj_data
from coherence_jax import sharding
from coherence_jax.data import sources
from experiments.common import aggregator_specs
from experiments.common import data
from experiments.common import distributed
from experiments.common import examples as examples_lib
from experiments.common import files
from experiments.common import loop
from experiments.common import nets
from experiments.common import run_config
from experiments.common import train_step as train_step_lib
from experiments.common import validation

# Label noise, drawn for the whole set at once in memory (`noisy_labels`):
LABEL_KINDS = ('permute', 'uniform')
# Input noise (`coherence_jax.data.corruption`): a pure function of (seed,
# index), labels kept; p = the exact fraction of examples corrupted.
PIXEL_KINDS = ('shuffled_pixels', 'random_pixels', 'gaussian_pixels')
NOISE_KINDS = LABEL_KINDS + PIXEL_KINDS
# The per-index rule of each noise kind (streamed data; pixels always).
INDEX_RULES = {'permute': 'permuted_labels', 'uniform': 'uniform_labels',
               **{kind: kind for kind in PIXEL_KINDS}}
FIXED_SAMPLES = 'fixed_samples.npz'
Row = Dict[str, Any]
Examples = examples_lib.Examples
Evaluator = examples_lib.Evaluator


class Setup(NamedTuple):
  """What every run of an experiment shares (compiled functions included)."""
  config: ml_collections.ConfigDict
  data: data.Data   # opened by name, clean (the runs' noise comes per run)
  net: nets.Net
  mesh: jax.sharding.Mesh
  trainers: Dict[str, train_step_lib.Trainer]  # by aggregator spec, cached
  arrays: Dict[str, Any]  # the in-memory splits' arrays, made once

  @property
  def train_size(self) -> int:
    return len(self.data.train)

  @property
  def test_size(self) -> int:
    return len(self.data.test)

  @property
  def num_classes(self) -> int:
    return self.data.spec.num_classes

  @property
  def streamed(self) -> bool:
    """Is the data read per example (else held as arrays)?"""
    return not isinstance(self.data.train.base, sources.ArraySource)

  def split_arrays(self, split: str):
    """(float32 images, int32 labels) of an in-memory split ('train' or
    'test'), clean, as the model sees them (normalized if configured)."""
    if self.streamed:
      raise ValueError(f'{split}: {self.config.data.name} is streamed; read '
                       'it by index (examples.Streamed).')
    if split not in self.arrays:
      source = getattr(self.data, split)
      everything = source.gather(np.arange(len(source)))
      self.arrays[split] = (everything['image'], everything['label'])
    return self.arrays[split]

  def trainer(self, spec: str) -> train_step_lib.Trainer:
    """The (cached) trainer of an aggregator spec, e.g. 'mean' or 'rm3'."""
    if spec not in self.trainers:
      t = self.config.train
      measure = self.config.get('measure', None) or {}
      self.trainers[spec] = train_step_lib.make_trainer(
          *aggregator_specs.build(spec, self.net.loss_fn, t.learning_rate,
                                  t.get('momentum', None)), mesh=self.mesh,
          method=measure.get('method', 'auto'))
    return self.trainers[spec]


def validate_common(config: ml_collections.ConfigDict, train_size: int,
                    spec: data.catalog.DatasetSpec) -> None:
  """ValueError naming the first bad shared field (nothing is written)."""
  validation.positive_int(config, 'seed', minimum=0)
  nets.check_name(config.model.name)
  if config.model.name == 'mlp':
    widths = tuple(config.model.widths)
    size = math.prod(spec.image_shape)
    validation.check(
        len(widths) >= 2 and all(_checks.is_int(w) and w >= 1
                                 for w in widths)
        and widths[0] == size and widths[-1] == spec.num_classes,
        'model.widths', widths, f'pass ({size}, hidden..., '
        f'{spec.num_classes}): the {size} input pixels of '
        f'{config.data.name}, positive hidden widths, the {spec.num_classes} '
        'classes')
  t = config.train
  for field, value in (('learning_rate', t.learning_rate),
                       ('momentum', t.get('momentum', 0.0) or 0.0)):
    validation.check(isinstance(value, (int, float)) and math.isfinite(value)
                     and value >= 0 and (field != 'learning_rate' or value > 0),
                     f'train.{field}', value, 'pass a finite number (> 0 for '
                     'the learning rate, >= 0 for momentum)')
  validation.positive_int(config, 'train.epochs')
  validation.positive_int(config, 'train.checkpoint_every_epochs')
  validation.check(_checks.is_int(t.batch_size) and
                   1 <= t.batch_size <= train_size, 'train.batch_size',
                   t.batch_size, f'pass 1..{train_size} (the training set)')
  if 'noise' in config:   # real_vs_random draws its own (label modes)
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


def check_streamed_batch(config: ml_collections.ConfigDict,
                         opened: data.Data) -> None:
  """Several processes streaming: the batch splits evenly over the devices
  (each process reads its slice, `distributed.shard_local_batch`)."""
  streamed = not isinstance(opened.train.base, sources.ArraySource)
  if streamed and jax.process_count() > 1:
    devices = jax.device_count()
    validation.check(config.train.batch_size % devices == 0,
                     'train.batch_size', config.train.batch_size,
                     f'pass a multiple of {devices}, the devices of all '
                     f'{jax.process_count()} processes (each process streams '
                     'its slice of every batch)')


def open_data(config: ml_collections.ConfigDict) -> data.Data:
  """config.data opened by name, clean (`data.open_dataset`)."""
  d = config.data
  return data.open_dataset(
      d.name, data_dir=d.get('data_dir', None),
      split_seed=d.get('split_seed', 0), normalize=d.get('normalize', False),
      image_size=d.get('image_size', None),
      num_threads=d.get('num_threads', 16), stream=d.get('stream', False))


def setup(config: ml_collections.ConfigDict,
          extra_checks: Optional[Callable[[ml_collections.ConfigDict, int],
                                          None]] = None,
          workdir: Optional[str] = None) -> Setup:
  """Opens the data, validates, saves config.json and builds the net.

  Args:
    config: the experiment config.
    extra_checks: the experiment's own `validate(config, train_size)`.
    workdir: if given, `run_config.check_and_save(config, workdir)`.
  """
  data.check_name(config.data.name)
  nets.check_name(config.model.name)
  opened = open_data(config)
  validate_common(config, len(opened.train), opened.spec)
  check_streamed_batch(config, opened)
  if extra_checks is not None:
    extra_checks(config, len(opened.train))
  if workdir is not None:
    run_config.check_and_save(config, workdir, distributed.is_writer())
  net = nets.make(config.model, opened.spec.image_shape,
                  opened.spec.num_classes, config.seed)
  return Setup(config, opened, net, distributed.make_mesh(config.mesh.data),
               {}, {})


def noisy_labels(labels: np.ndarray, kind: str, p: float, seed: int,
                 num_classes: int = data.NUM_CLASSES
                 ) -> Dict[str, np.ndarray]:
  """{'label', 'selected', 'corrupt'}: p = 0 keeps every label.

  'permute': the ICLR 2020 rule (pick with probability p, permute the picked
  labels); 'uniform': 2003.07422 / 2008.01217 (a uniform class with
  probability p). 'corrupt' = the label actually changed. Drawn for the
  whole set at once (in-memory data; streamed data uses `INDEX_RULES`).
  """
  labels = np.asarray(labels)
  if p == 0:
    none = np.zeros(labels.shape, bool)
    return {'label': labels, 'selected': none, 'corrupt': none.copy()}
  if kind == 'permute':
    return cj_data.corrupt_labels(labels, p, seed)
  if kind == 'uniform':
    return cj_data.random_labels(labels, num_classes, p=p, seed=seed)
  raise ValueError(f'config.noise.kind: got {kind!r}; pass one of '
                   f'{NOISE_KINDS}.')


def index_corruption(kind: str, p: float, seed: int) -> data.Corruption:
  """The per-index rule of noise `kind` at p (streamed data)."""
  if kind not in INDEX_RULES:
    raise ValueError(f'config.noise.kind: got {kind!r}; pass one of '
                     f'{NOISE_KINDS}.')
  if p == 0:
    return data.Corruption()
  return data.Corruption(INDEX_RULES[kind], p=float(p), seed=int(seed))


def _streamed_split(s: Setup, split: str,
                    corruption: data.Corruption) -> examples_lib.Streamed:
  clean = getattr(s.data, split)
  return examples_lib.Streamed(sources.TransformedSource(
      clean.base, num_classes=s.num_classes, corruption=corruption,
      mean=clean.mean, std=clean.std, normalize=clean.normalize))


def relabel(s: Setup, kind: str, p: float, seed: int,
            split: str = 'train') -> Examples:
  """A split noised by `kind` at p (no files written).

  In memory: `noisy_labels` of the whole split (the examples' `corrupt`
  mask exact), or for a pixel kind the split gathered through its per-index
  rule. Streamed: the per-index rule (`index_corruption`).
  """
  if s.streamed:
    return _streamed_split(s, split, index_corruption(kind, p, seed))
  if kind in PIXEL_KINDS:
    source = _streamed_split(s, split, index_corruption(kind, p, seed)).source
    everything = np.arange(len(source))
    corrupted = source.gather(everything)
    return examples_lib.InMemory(corrupted['image'], corrupted['label'],
                                 source.corrupt(everything))
  images, labels = s.split_arrays(split)
  out = noisy_labels(labels, kind, p, seed, s.num_classes)
  return examples_lib.InMemory(images, out['label'], out['corrupt'])


def clean(s: Setup, split: str = 'train') -> Examples:
  """A split with its own labels ('train' or 'test')."""
  if s.streamed:
    return _streamed_split(s, split, data.Corruption())
  return examples_lib.InMemory(*s.split_arrays(split))


def load_noise(run_dir: str, s: Setup, kind: str, p: float,
               seed: int) -> Examples:
  """The run's training examples with its noisy labels, drawn once.

  In memory, label kinds: the labels and masks are kept in
  run_dir/corruption.npz (and corruption.json), read back by a resumed run.
  Streamed, or a pixel kind: corruption.json records the per-index rule (a
  pure function of (seed, index), nothing to keep). A run_dir holding
  examples noised with another (kind, p, seed) is refused.
  """
  npz, meta = (os.path.join(run_dir, 'corruption.npz'),
               os.path.join(run_dir, 'corruption.json'))
  wanted = {'kind': kind, 'p': p, 'seed': seed}
  if os.path.exists(meta):
    saved = files.read_json(meta)
    drawn = {k: saved.get(k) for k in wanted}
    if drawn != wanted:
      raise ValueError(f'config.noise: got {wanted}; {run_dir} holds '
                       f'examples noised with {drawn}: pass a new --workdir.')
  writer = distributed.is_writer()
  if s.streamed or kind in PIXEL_KINDS:
    train = relabel(s, kind, p, seed)
    if writer:
      os.makedirs(run_dir, exist_ok=True)
      c, n = index_corruption(kind, p, seed), s.train_size
      files.write_json(meta, {**wanted, 'rule': c.kind, 'num_examples': n,
                              'selected_fraction': float(
                                  np.floor(c.p * n + 0.5) / n
                                  if c.kind != 'none' else 0.0)})
    return train
  images, _ = s.split_arrays('train')
  if os.path.exists(npz):
    with np.load(npz) as arrays:
      return examples_lib.InMemory(images, arrays['label'], arrays['corrupt'])
  _, labels = s.split_arrays('train')
  out = noisy_labels(labels, kind, p, seed, s.num_classes)
  if writer:
    os.makedirs(run_dir, exist_ok=True)
    files.write_json(meta, {**wanted,
                            'selected_fraction': float(out['selected'].mean()),
                            'corrupt_fraction': float(out['corrupt'].mean())})
    files.write_npz(npz, **out)
  return examples_lib.InMemory(images, out['label'], out['corrupt'])


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


def fixed_sample(seed: int, size: int, count: int) -> np.ndarray:
  """`count` example indices drawn once from `seed` (sorted)."""
  return np.sort(np.random.default_rng([seed, 7]).choice(size, count,
                                                          replace=False))


def held_out_sample(seed: int, size: int, count: int) -> np.ndarray:
  """`count` test-split indices drawn once from `seed` (sorted)."""
  return np.sort(np.random.default_rng([seed, 9]).choice(size, count,
                                                          replace=False))


def _measure_field(s: Setup, field: str, default: Any = None) -> Any:
  measure = s.config.get('measure', None)
  return default if measure is None else measure.get(field, default)


def eval_indices(s: Setup, split: str = 'train') -> Optional[np.ndarray]:
  """The examples whose accuracy a run tracks: None (all, the default) or
  the fixed sample of config.measure.eval_size (train; the same examples
  as a coherence sample of that size) / test_eval_size (test)."""
  if split == 'train':
    count = _measure_field(s, 'eval_size')
    return None if count is None else fixed_sample(s.config.seed,
                                                   s.train_size, count)
  count = _measure_field(s, 'test_eval_size')
  if count is None or count >= s.test_size:
    return None
  return held_out_sample(s.config.seed, s.test_size, count)


def evaluator(s: Setup, examples: Examples,
              indices: Optional[np.ndarray] = None) -> Evaluator:
  """`examples.Evaluator` of `indices` (None: all) on the run's mesh."""
  return examples_lib.Evaluator(
      s.net, examples, indices, mesh=s.mesh,
      chunk_size=_measure_field(s, 'chunk_size') or examples_lib.CHUNK)


def coherence_sample(s: Setup, train: Examples, size: int):
  """The fixed coherence sample (`fixed_sample(config.seed, N, size)`) of
  the run's training examples: arrays in memory, an `examples.Sample` of
  indices when streamed."""
  indices = fixed_sample(s.config.seed, s.train_size, size)
  if train.streamed:
    return examples_lib.Sample(train, indices)
  return train.gather(indices)


def coherence_row(s: Setup, state: Any, sample: Any, microbatch_size: int,
                  method: str = 'auto') -> Row:
  """m-coherence of a fixed sample: whole network and per module.

  Args:
    sample: `coherence_sample(...)`: {'image', 'label'} arrays, or an
      `examples.Sample` read in chunks (statistics merged).

  Returns:
    'm_coherence', 'alpha', 'alpha_unbiased' (self-term-free α̂),
    'gradient_diversity', 'noise_scale' (B_simple; inf / nan where
    undefined), 'mean_sq_norm' (Q / m, the mean ‖g_i‖²),
    'modules' {name: m-coherence} and 'shares' {name: Q_l / Q}.
  """
  if isinstance(sample, examples_lib.Sample):
    stats = examples_lib.coherence_stats(
        s.net.loss_fn, state['params'], sample, s.mesh,
        microbatch_size=microbatch_size, method=method,
        chunk_size=_measure_field(s, 'chunk_size') or examples_lib.CHUNK)
  else:
    stats = sharding.sharded_coherence_stats(
        s.net.loss_fn, state['params'], sample, s.mesh,
        microbatch_size=microbatch_size, method=method)
  numbers = stats.report()
  return {
      'm_coherence': numbers['m_coherence'], 'alpha': numbers['alpha'],
      'alpha_unbiased': numbers['alpha_unbiased'],
      'gradient_diversity': numbers['gradient_diversity'],
      'noise_scale': numbers['noise_scale'],
      'mean_sq_norm': float(sum(jax.device_get(
          jax.tree.leaves(stats.sq_norms())))) / max(numbers['count'], 1),
      'modules': {k: v['m_coherence'] for k, v in numbers['modules'].items()},
      'shares': {k: v['share'] for k, v in numbers['modules'].items()},
  }


def steps_per_epoch(s: Setup, train_size: Optional[int] = None) -> int:
  return (train_size or s.train_size) // s.config.train.batch_size


def fit(run_dir: str, s: Setup, train: Examples, *,
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
    train: the run's training examples (`load_noise`, `relabel`, `clean`).
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
  pool = None if train_indices is None else np.asarray(train_indices)
  size = len(train) if pool is None else len(pool)
  batch_size = config.train.batch_size
  if batch_size > size:
    raise ValueError(f'config.train.batch_size: got {batch_size}; the run '
                     f'{name or run_dir} trains on {size} examples: pass '
                     f'<= {size}.')
  per_epoch = size // batch_size
  total = per_epoch * (epochs or config.train.epochs)
  read = examples_lib.batch_reader(train, seed=config.seed,
                                   batch_size=batch_size, total_steps=total,
                                   pool=pool)

  def measure_with_lr(state, step):
    return {**measure(state, step),
            'learning_rate': float(config.train.learning_rate)}

  return loop.fit(
      run_dir, trainer=trainer, params=s.net.params, read=read,
      total_steps=total, measure=measure_with_lr, measure_steps=measure_steps,
      checkpoint_every=(checkpoint_every
                        or per_epoch * config.train.checkpoint_every_epochs),
      on_step=on_step, log=log,
      records=records, update_records=update_records,
      name=name or os.path.basename(run_dir),
      metadata=run_config.metadata(config))


def total_steps(s: Setup, epochs: Optional[int] = None,
                train_size: Optional[int] = None) -> int:
  """Steps of a run of `epochs` (default config.train.epochs)."""
  return steps_per_epoch(s, train_size) * (epochs or s.config.train.epochs)


def noise_dir(p: float) -> str:
  """0.25 -> 'noise_0.25' (a run directory name)."""
  return f'noise_{p:.2f}'


class Run(NamedTuple):
  """One run's directory, training examples and evaluators."""
  run_dir: str
  train: Examples       # with the run's labels
  train_eval: Evaluator  # `eval_indices(s, 'train')` of `train`
  test_eval: Evaluator   # `eval_indices(s, 'test')` of the clean test split
  per_epoch: int

  @property
  def corrupt(self) -> np.ndarray:
    """The corrupt mask of the evaluated training examples."""
    return self.train_eval.corrupt


def open_run(s: Setup, run_dir: str, train: Examples,
             sample_size: Optional[int] = None) -> Run:
  """The `Run` of `train` in run_dir; records its fixed index sets.

  run_dir/fixed_samples.npz (process 0) keeps the index sets the run
  measures on: 'coherence' (a sample of `sample_size`, if given), 'eval'
  and 'held_out' (where config.measure limits them to samples).
  """
  sets = {'eval': eval_indices(s, 'train'),
          'held_out': eval_indices(s, 'test')}
  if sample_size:
    sets['coherence'] = fixed_sample(s.config.seed, s.train_size, sample_size)
  sets = {k: v for k, v in sets.items() if v is not None}
  if sets and distributed.is_writer():
    os.makedirs(run_dir, exist_ok=True)
    files.write_npz(os.path.join(run_dir, FIXED_SAMPLES), **sets)
  return Run(run_dir, train, evaluator(s, train, sets.get('eval')),
             evaluator(s, clean(s, 'test'), sets.get('held_out')),
             steps_per_epoch(s))


def test_row(run: Run, state: Any, step: int) -> Row:
  """'test_accuracy' and 'test_loss' of the run's held-out examples."""
  correct, loss = run.test_eval.at(state, step)
  return {'test_accuracy': float(correct.mean()),
          'test_loss': float(loss.mean())}

