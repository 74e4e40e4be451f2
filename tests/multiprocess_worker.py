"""One process of the 2-process test: `python -m tests.multiprocess_worker PORT ID`.

Initializes jax.distributed (gloo CPU collectives, 4 devices per process),
takes its own slice of a fixed 13-example batch (7 / 6 examples) and prints
the global statistics that sharded_coherence_stats returns.
"""

import sys

import jax


def main(port: str, process_id: int) -> None:
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_num_cpu_devices', 4)
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from coherence_jax import sharding  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  loss_fn, params = helpers.tiny_mlp()
  batch = jax.tree.map(np.asarray, helpers.tiny_batch(13))
  mine = slice(0, 7) if process_id == 0 else slice(7, 13)
  local = jax.tree.map(lambda x: x[mine], batch)
  mesh = jax.make_mesh((8,), ('data',))
  stats = sharding.sharded_coherence_stats(loss_fn, params, local, mesh,
                                           process_local=True,
                                           microbatch_size=2)
  print('RESULT', process_id, int(stats.count), float(stats.m_coherence()),
        flush=True)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]))
