"""A run's examples, read by index: held in memory or streamed.

The experiments see a split (with the run's labels) as one of two kinds:
- `InMemory`: float32 images, labels and the corrupt mask as whole arrays —
  mnist5k and the tfds datasets that fit (mnist, fashion_mnist, cifar10,
  cifar100). Batches are array indexing; every process holds the set.
- `Streamed`: a `coherence_jax.data.sources.TransformedSource` (tfds
  data_source + grain) — imagenet2012, or any tfds dataset with
  config.data.stream=True. Nothing is held but the examples in flight: each
  process reads only its slice of every batch or chunk, decoded in grain
  threads, and its corruption is a pure function of (seed, example index).

Both are read by index, so a run's batches, measurement samples and
per-example records are the same however the run is split into processes or
restarted. The module gives what `supervised` needs from them:
  batch_reader      step -> the training batch of that step (a pure function
                    of (seed, step); streamed: read ahead in grain threads)
  Evaluator         per-example correctness and loss of a fixed index set,
                    once per step (streamed: in chunks sharded over the mesh,
                    the next chunk read while the current one is scored)
  Sample, coherence_stats
                    m-coherence of a streamed fixed sample: CoherenceStats
                    of chunks, merged (exact sums; no chunk held twice)

Host memory of a streamed run, per process: the training batch in flight
and the grain read-ahead (about 3 x batch_size / processes examples), one or
two measurement chunks (`chunk_size / processes` examples each) and the
per-example results (bytes per example). ImageNet at 224 x 224 is 0.6 MB per
float32 example: batch 1024 and chunks of 1024 on one process ~3 GB.

Example:
  >>> train = Streamed(data.open_dataset('imagenet2012').train)
  >>> evaluator = Evaluator(net, train, indices=np.arange(50_000), mesh=mesh)
  >>> correct, loss = evaluator.at(state, step=0)
"""

import concurrent.futures
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from coherence_jax import sharding as cj_sharding
from coherence_jax.data import order
from coherence_jax.data import sources
from experiments.common import distributed

Batch = Dict[str, np.ndarray]
CHUNK = 1024  # examples per evaluation / coherence chunk (all processes)


class InMemory:
  """A split held as arrays: float32 images [N, ...], int32 labels [N] and
  the corrupt mask [N] (label changed; all False for clean labels)."""

  streamed = False

  def __init__(self, images: np.ndarray, labels: np.ndarray,
               corrupt: Optional[np.ndarray] = None):
    self.images = images
    self.labels = np.asarray(labels)
    self.corrupt = (np.zeros(self.labels.shape, bool) if corrupt is None
                    else np.asarray(corrupt, bool))

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def gather(self, indices) -> Batch:
    indices = np.asarray(indices)
    return {'image': np.asarray(self.images)[indices],
            'label': self.labels[indices]}

  def corrupt_of(self, indices) -> np.ndarray:
    return self.corrupt[np.asarray(indices)]


class Streamed:
  """A split read per example from a `TransformedSource` (its corruption
  applied per index); `len`, `gather(indices, with_mask)`, `corrupt_of`."""

  streamed = True

  def __init__(self, source: sources.TransformedSource):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def gather(self, indices, with_mask: bool = False) -> Batch:
    return self.source.gather(np.asarray(indices, np.int64), with_mask)

  def corrupt_of(self, indices) -> np.ndarray:
    return self.source.corrupt(np.asarray(indices, np.int64))


Examples = Any  # InMemory | Streamed


def batch_reader(examples: Examples, *, seed: int, batch_size: int,
                 total_steps: int, pool: Optional[np.ndarray] = None
                 ) -> Callable[[int], Tuple[Batch, bool]]:
  """`read(step) -> (batch, process_local)`: the training batch of a step.

  The global batch of step s is `pool[batch_indices(seed, s, batch_size,
  len(pool))]` (pool: default every example). In memory: the whole global
  batch (process_local False). Streamed: this process's slice of it
  (process_local True with several processes), read ahead by a grain
  pipeline from the first step asked for; asking for another step than the
  next one (a resumed run) starts a new pipeline there.
  """
  size = len(examples) if pool is None else len(pool)
  if not examples.streamed:
    images, labels = np.asarray(examples.images), examples.labels
    everything = np.arange(len(examples)) if pool is None else pool

    def read(step):
      idx = everything[order.batch_indices(seed, step, batch_size, size)]
      return {'image': images[idx], 'label': labels[idx]}, False
    return read

  process_local = jax.process_count() > 1
  state = {'next': None, 'stream': None}

  def read_streamed(step):
    if state['next'] != step:
      state['stream'] = sources.batches(
          examples.source, seed=seed, batch_size=batch_size, start_step=step,
          num_steps=total_steps - step, process_index=jax.process_index(),
          process_count=jax.process_count(), pool=pool)
    got, batch = next(state['stream'])
    assert got == step, (got, step)
    state['next'] = step + 1
    return batch, process_local
  return read_streamed


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _to_host(x: jax.Array) -> np.ndarray:
  """A global array's values on every process."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _gather_processes(local: np.ndarray) -> np.ndarray:
  """Every process's equal-size slice, concatenated in process order."""
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def _prefetched(read: Callable[[Any], Any], items) -> Iterator[Tuple[Any, Any]]:
  """(item, read(item)) for each item, the next read started in a thread
  while the caller works on the current one."""
  items = list(items)
  if not items:
    return
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = pool.submit(read, items[0])
    for i, item in enumerate(items):
      value = pending.result()
      if i + 1 < len(items):
        pending = pool.submit(read, items[i + 1])
      yield item, value


class Evaluator:
  """Per-example correctness and loss of a fixed index set, cached per step.

  `at(state, step)` evaluates once per step, so the records update and the
  metrics row of the same measurement share one forward pass.

  In memory: the set is put on this process's first device once and scored
  there (`net.evaluate`, in chunks). Streamed: chunks of `chunk_size`
  examples (a multiple of the mesh's devices; the last padded with its last
  index, the padding dropped), each process reading its slice, scored by
  `net.score` sharded over the mesh and gathered, the next chunk read while
  the current one is scored.

  Attributes:
    indices: the examples scored (None: every example of the split).
    corrupt: their corrupt mask (streamed: read with the first evaluation).
  """

  def __init__(self, net, examples: Examples,
               indices: Optional[np.ndarray] = None, *,
               mesh: Optional[jax.sharding.Mesh] = None,
               chunk_size: int = CHUNK):
    self.net, self.examples, self.mesh = net, examples, mesh
    self.indices = None if indices is None else np.asarray(indices, np.int64)
    self.chunk_size = chunk_size
    self._cached = (None, None)
    self._corrupt = None
    if not examples.streamed:
      device = jax.local_devices()[0]
      images, labels = np.asarray(examples.images), examples.labels
      if self.indices is not None:
        images, labels = images[self.indices], labels[self.indices]
      self.images, self.labels = jax.device_put(
          (np.asarray(images), np.asarray(labels)), device)
      self._corrupt = (examples.corrupt if self.indices is None
                       else examples.corrupt[self.indices])
    elif mesh is None:
      raise ValueError('mesh: pass the run mesh to evaluate streamed data.')

  def __len__(self) -> int:
    return (len(self.examples) if self.indices is None
            else int(self.indices.size))

  def at(self, state: Any, step: int) -> Tuple[np.ndarray, np.ndarray]:
    """(correct bool [K], loss [K]) of the set at `step`'s params."""
    if self._cached[0] != step:
      if self.examples.streamed:
        value = self._streamed(state['params'])
      else:
        value = self.net.evaluate(distributed.local_copy(state['params']),
                                  self.images, self.labels)
      self._cached = (step, value)
    return self._cached[1]

  @property
  def corrupt(self) -> np.ndarray:
    if self._corrupt is None:
      everything = (np.arange(len(self.examples)) if self.indices is None
                    else self.indices)
      self._corrupt = self.examples.corrupt_of(everything)
    return self._corrupt

  def _streamed(self, params) -> Tuple[np.ndarray, np.ndarray]:
    everything = (np.arange(len(self.examples)) if self.indices is None
                  else self.indices)
    devices = distributed.mesh_size(self.mesh)
    size = min(_round_up(self.chunk_size, devices),
               _round_up(len(everything), devices))
    part = order.process_slice(size, jax.process_index(), jax.process_count())
    sharding = NamedSharding(self.mesh, P(distributed.AXIS))
    chunks = []
    for start in range(0, len(everything), size):
      chunk = everything[start:start + size]
      valid = len(chunk)
      chunks.append((np.concatenate([chunk, np.repeat(chunk[-1:],
                                                      size - valid)]), valid))

    def read(item):
      chunk, _ = item
      return self.examples.gather(chunk[part], with_mask=True)

    correct, loss, corrupt = [], [], []
    for (_, valid), batch in _prefetched(read, chunks):
      images, labels = (jax.make_array_from_process_local_data(sharding,
                                                               batch[k])
                        for k in ('image', 'label'))
      c, l = self.net.score(params, images, labels)
      correct.append(_to_host(c)[:valid])
      loss.append(_to_host(l)[:valid])
      corrupt.append(_gather_processes(batch['corrupt'])[:valid])
    self._corrupt = np.concatenate(corrupt)
    return np.concatenate(correct), np.concatenate(loss)


class Sample(NamedTuple):
  """A fixed measurement sample of streamed examples: read chunk by chunk."""
  examples: Streamed
  indices: np.ndarray


def coherence_stats(loss_fn, params, sample: Sample, mesh, *,
                    microbatch_size: int, method: str = 'auto',
                    chunk_size: int = CHUNK):
  """`CoherenceStats` of a streamed sample, merged over chunks.

  Chunks of `chunk_size` (rounded to the mesh's devices) examples; with
  several processes each reads its slice of a chunk
  (`sharded_coherence_stats(process_local=True)`), and the last < processes
  examples are read by every process. Equal to the statistics of the whole
  sample at once up to float32 summation order.
  """
  devices = distributed.mesh_size(mesh)
  count, index = jax.process_count(), jax.process_index()
  size = _round_up(max(chunk_size, 1), devices)
  everything = np.asarray(sample.indices, np.int64)
  pieces = []  # (indices, process_local)
  for start in range(0, len(everything), size):
    chunk = everything[start:start + size]
    if count == 1:
      pieces.append((chunk, False))
      continue
    shared = len(chunk) - len(chunk) % count
    if shared:
      pieces.append((chunk[:shared], True))
    if shared < len(chunk):
      pieces.append((chunk[shared:], False))

  def read(piece):
    chunk, local = piece
    if local:
      chunk = chunk[order.process_slice(len(chunk), index, count)]
    return sample.examples.gather(chunk)

  total = None
  for (_, local), batch in _prefetched(read, pieces):
    stats = cj_sharding.sharded_coherence_stats(
        loss_fn, params, batch, mesh, microbatch_size=microbatch_size,
        method=method, process_local=local)
    total = stats if total is None else total.merge(stats)
  if total is None:
    raise ValueError('sample: no examples; pass a non-empty sample.')
  return total

