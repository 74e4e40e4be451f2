"""One process of the 2-process test: `python -m tests.multiprocess_worker PORT ID`.

Initializes jax.distributed (gloo CPU collectives, 4 devices per process) and
prints, as `RESULT <name> <process> <json>` lines, what the global mesh of 8
devices gives for:
- coherence: `sharded_coherence_stats` on a fixed 13-example batch, each
  process loading only its slice (7 / 6 examples);
- winsorized: one `winsorized_mean(1, axis_name='data')` update inside
  shard_map, each process holding 8 of 16 per-example gradients;
- training: 3 steps of the experiments' data-parallel trainer with the
  per-example aggregator 'winsorized:1' on a global batch of 12.
tests/test_sharding.py computes the same three things in one process.
"""

import json
import sys

import jax

TRAIN_STEPS = 3
TRAIN_BATCH = 12
TRAIN_SPEC = 'winsorized:1'


def train_batch(step: int):
  """The global batch of training step `step` (host arrays, any process)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray,
                      helpers.tiny_batch(TRAIN_BATCH, seed=100 + step))


def winsorized_inputs():
  """(per-example gradients [16, ...], params) of the tiny MLP."""
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  loss_fn, params = helpers.tiny_mlp()
  return cj.per_example_grads(loss_fn, params, helpers.tiny_batch(16)), params


def flat(tree) -> list:
  """The tree's leaves, flattened and concatenated, as a list of floats."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.concatenate([np.ravel(np.asarray(x, np.float64))
                         for x in jax.tree.leaves(tree)]).tolist()


def _print(name, process_id, value) -> None:
  print('RESULT', name, process_id, json.dumps(value), flush=True)


def main(port: str, process_id: int) -> None:
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_num_cpu_devices', 4)
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=process_id)
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  from coherence_jax import aggregators
  from coherence_jax import sharding
  from experiments.common import aggregator_specs
  from experiments.common import distributed
  from experiments.common import train_step
  from tests import helpers
  # pylint: enable=g-import-not-at-top

  mesh = jax.make_mesh((8,), ('data',))
  loss_fn, params = helpers.tiny_mlp()

  batch = jax.tree.map(np.asarray, helpers.tiny_batch(13))
  mine = slice(0, 7) if process_id == 0 else slice(7, 13)
  stats = sharding.sharded_coherence_stats(
      loss_fn, params, jax.tree.map(lambda x: x[mine], batch), mesh,
      process_local=True, microbatch_size=2)
  _print('coherence', process_id,
         [int(stats.count), float(stats.m_coherence())])

  grads, _ = winsorized_inputs()
  rows = slice(8 * process_id, 8 * process_id + 8)
  global_grads = jax.tree.map(
      lambda g: jax.make_array_from_process_local_data(
          NamedSharding(mesh, P('data')), np.asarray(g)[rows]), grads)
  tx = aggregators.winsorized_mean(1, axis_name='data')
  update = jax.jit(jax.shard_map(
      lambda g: tx.update(g, tx.init(params), params)[0], mesh=mesh,
      in_specs=P('data'), out_specs=P()))(global_grads)
  _print('winsorized', process_id, flat(distributed.local_copy(update)))

  grad_fn, optimizer = aggregator_specs.build(TRAIN_SPEC, loss_fn,
                                              learning_rate=0.1)
  trainer = train_step.make_trainer(grad_fn, optimizer,
                                    distributed.make_mesh(-1))
  state = trainer.init(params)
  for step in range(TRAIN_STEPS):
    state, _ = trainer.step(state, train_batch(step))
  _print('training', process_id,
         flat(distributed.local_copy(state['params'])))
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]))
