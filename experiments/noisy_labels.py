r"""Noisy labels: does robust aggregation block memorization? (ICLR 2020 §5)

  python -m experiments.noisy_labels --workdir=/tmp/noisy \
      [--aggregators=mean,winsorized:4,rm3] [--config.train.epochs=50]

Writes <workdir>/<aggregator>/metrics.jsonl, summary.json, noisy_labels.png,
table.md and the corruption masks (corruption.npz, corruption.json).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import noisy_labels_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'experiments/configs/noisy_labels.py', 'Experiment config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.',
                               required=True)
_AGGREGATORS = flags.DEFINE_list(
    'aggregators', None, 'Aggregators to run (default: the config\'s sweep).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  noisy_labels_lib.run(_CONFIG.value, _WORKDIR.value, _AGGREGATORS.value)


if __name__ == '__main__':
  app.run(main)
