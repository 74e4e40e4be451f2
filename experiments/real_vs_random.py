r"""Real versus random labels: m-coherence over training (the `make demo`).

  python -m experiments.real_vs_random --workdir=/tmp/rvr \
      [--config=experiments/configs/real_vs_random.py --config.train.epochs=60]

Writes <workdir>/<mode>/metrics.jsonl, summary.json, real_vs_random.png.
A crashed run resumes from its checkpoints when started again.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import real_vs_random_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'experiments/configs/real_vs_random.py', 'Experiment config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.',
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  real_vs_random_lib.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
