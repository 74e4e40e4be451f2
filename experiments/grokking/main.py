r"""Coherence through grokking: m-coherence while a transformer groks (a + b) mod p.

  python -m experiments.grokking.main --workdir=/tmp/grokking \
      [--config=experiments/grokking/configs/tiny.py] [--config.seed=1]

Writes <workdir>/metrics.jsonl, summary.json, report.md, grokking.png. A
crashed run resumes from its checkpoints when started again. Several
processes: the flags of experiments/common/distributed.py, as for
experiments.real_vs_random.main.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import distributed
from experiments.common import progress

from experiments.grokking import train

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
