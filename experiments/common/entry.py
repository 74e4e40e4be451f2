"""The absl entry every experiment's main.py shares: --config, --workdir.

Example (an experiment's main.py):
  >>> main = entry.define(__file__, train.train_and_evaluate)
  >>> if __name__ == '__main__':
  ...   app.run(main)
"""

import os
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import compile_cache
from experiments.common import distributed
from experiments.common import progress


def define(main_file: str,
           train_and_evaluate: Callable[[Any, str], Any]
           ) -> Callable[[Any], None]:
  """Defines --config (default configs/default.py next to `main_file`),
  --workdir, --compilation_cache_dir and the process flags; returns absl's
  `main(argv)`."""
  config = config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(main_file), 'configs',
                             'default.py'),
      'Experiment config file; override fields with --config.<field>=value.')
  workdir = flags.DEFINE_string('workdir', None, 'Output directory.',
                                required=True)
  cache_dir = flags.DEFINE_string(
      'compilation_cache_dir', None,
      "JAX's persistent compilation cache: later runs with the same shapes "
      '(a resumed run, a re-run with other labels or seeds) load the '
      'compiled programs instead of compiling again. Default: the folder '
      'JAX_COMPILATION_CACHE_DIR names, else <workdir>/compilation_cache; '
      "'off': none.")
  distributed.define_flags()

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    progress.quiet_library_logs()  # progress at INFO, orbax's INFO dropped
    distributed.initialize_from_flags()  # before any JAX computation
    compile_cache.enable(cache_dir.value, workdir.value)
    train_and_evaluate(config.value, workdir.value)

  return main
