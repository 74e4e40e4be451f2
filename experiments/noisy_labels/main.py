r"""Noisy labels: does robust aggregation block memorization? (ICLR 2020 §5)

  python -m experiments.noisy_labels.main --workdir=/tmp/noisy \
      [--config=experiments/noisy_labels/configs/tiny.py] \
      [--config.aggregators='("mean","winsorized:4")']

Writes <workdir>/<aggregator>/metrics.jsonl, summary.json, noisy_labels.png,
table.md and the corruption masks (corruption.npz, corruption.json). A crashed
run resumes from its checkpoints when started again.

Several processes (one per host, or N on one machine for testing; see
launch/): add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or --distributed=auto where the environment provides them
(Cloud TPU VM, SLURM). Only process 0 writes files.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import distributed
from experiments.common import progress

from experiments.noisy_labels import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'default.py'),
    'Experiment config file; override fields with --config.<field>=value.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.',
                               required=True)
distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  progress.quiet_library_logs()  # progress at INFO; orbax's INFO lines dropped
  distributed.initialize_from_flags()  # before any JAX computation
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
