"""The absl entry every experiment's main.py shares: --config, --workdir.

The run holds its workdir (`workdir_lock`; in a multi-process run process 0
holds it) from the start to its exit, so a second run on the same workdir is
refused at once. Failures of the file system under the run (a full disk, a
read-only mount, a workdir that is a file) end it with one line naming the
path, the cause and the fix instead of the library tracebacks above them.

Example (an experiment's main.py):
  >>> main = entry.define(__file__, train.train_and_evaluate)
  >>> if __name__ == '__main__':
  ...   app.run(main, flags_parser=entry.parse_flags)
"""

import errno
import importlib.util
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import compile_cache
from experiments.common import distributed
from experiments.common import progress
from experiments.common import workdir_lock

# The causes a user fixes outside the program, with the fix: (in the
# workdir, elsewhere, e.g. a data_dir).
_FILE_SYSTEM_FIXES = {
    errno.ENOSPC: ('free space there, or pass a --workdir on another disk',
                   'free space on that disk'),
    errno.EDQUOT: ('free space in your quota, or pass another --workdir',
                   'free space in your quota'),
    errno.EROFS: ('pass a --workdir on a writable file system',
                  'that file system is read-only: point the config elsewhere'),
    errno.EACCES: ('pass a --workdir you can write (or fix its permissions)',
                   'fix its permissions or point the config elsewhere'),
    errno.EPERM: ('pass a --workdir you can write (or fix its permissions)',
                  'fix its permissions or point the config elsewhere'),
}


def file_system_cause(error: BaseException) -> Optional[OSError]:
  """The first OSError with a user-fixable errno (`_FILE_SYSTEM_FIXES`) in
  `error`'s chain (__cause__ / __context__; orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FILE_SYSTEM_FIXES:
      return error
    error = error.__cause__ or error.__context__
  return None


def describe_file_system_error(error: OSError, workdir: str) -> str:
  """One line: the path, the cause and the fix.

  >>> describe_file_system_error(OSError(28, 'No space left on device',
  ...                                    '/w/x'), '/w')
  'error: /w/x: No space left on device (ENOSPC) while running in --workdir=/w; free space there, or pass a --workdir on another disk.'
  """
  path = str(error.filename or workdir)
  inside = os.path.abspath(path).startswith(os.path.abspath(workdir))
  fix = _FILE_SYSTEM_FIXES[error.errno][0 if inside else 1]
  return (f'error: {path}: {error.strerror} ({errno.errorcode[error.errno]}) '
          f'while running in --workdir={workdir}; {fix}.')


def run(train_and_evaluate: Callable[[Any, str], Any], config: Any,
        workdir: str, cache_dir: Optional[str] = None) -> None:
  """`train_and_evaluate(config, workdir)` holding the workdir; SystemExit
  with one line for a busy or unusable workdir or a file-system failure.

  >>> run(train.train_and_evaluate, config, '/tmp/rvr')
  """
  held = None
  try:
    if distributed.is_writer():
      held = workdir_lock.acquire(workdir)  # the kernel drops it at exit
    compile_cache.enable(cache_dir, workdir)
    train_and_evaluate(config, workdir)
  except (workdir_lock.WorkdirBusyError, workdir_lock.WorkdirError) as e:
    sys.exit(f'error: {e}')
  except Exception as e:  # pylint: disable=broad-except
    cause = file_system_cause(e)
    if cause is None:
      raise
    sys.exit(describe_file_system_error(cause, workdir))
  finally:
    if held is not None:
      held.release()


def unknown_field(config: Any, argv: Sequence[str]) -> Optional[str]:
  """One line for the first `--config.<path>` of argv that `config` lacks,
  listing the valid fields where it stops; None if every path exists.

  >>> unknown_field(ConfigDict({'train': {'lr': 1}}),
  ...               ['--config.train.foo=1'])
  "--config.train.foo: the config has no field 'foo' in 'train'; valid: lr."
  """
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=')[0]
    node, walked = config, []
    for key in path.split('.'):
      if not hasattr(node, 'keys') or key not in node.keys():
        where = '.'.join(walked) or 'the config'
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else (
            f'none ({where} is a {type(node).__name__}, not a group)')
        return (f'--config.{path}: the config has no field {key!r} in '
                f'{where!r}; valid: {valid}.' if walked else
                f'--config.{path}: the config has no field {key!r}; valid: '
                f'{valid}.')
      node, walked = node[key], walked + [key]
  return None


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl's flag parsing, with a config field that does not exist
  (`--config.train.foo=1`: ml_collections raises AttributeError/KeyError)
  named in one line with the valid fields. Pass it to
  `app.run(main, flags_parser=entry.parse_flags)`."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    _exit_unknown_field(e, argv[1:], flags.FLAGS['config'].default)


def _exit_unknown_field(error: Exception, args: Sequence[str],
                        default: Any) -> None:
  """SystemExit with `unknown_field`'s line (or `error` if none applies)."""
  try:
    message = unknown_field(_config_of(args, default), args)
  except Exception:  # pylint: disable=broad-except
    message = None  # the config file itself does not load: say what we can
  sys.exit(f'error: {message or f"a --config.<field> override failed: {error}"}')


def _config_of(args: Sequence[str], default: Any) -> Any:
  """The config that `--config=FILE[:arg]` in args (else --config's default)
  names, loaded as ml_collections does."""
  path = next((a[len('--config='):] for a in args
               if a.startswith('--config=')), None)
  if path is None:
    if not isinstance(default, str):
      return default
    path = default
  path, _, arg = path.partition(':')
  spec = importlib.util.spec_from_file_location('_config_for_errors', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def define(main_file: str,
           train_and_evaluate: Callable[[Any, str], Any]
           ) -> Callable[[Any], None]:
  """Defines --config (default configs/default.py next to `main_file`),
  --workdir, --compilation_cache_dir and the process flags; returns absl's
  `main(argv)`."""
  default = os.path.join(os.path.dirname(main_file), 'configs', 'default.py')
  try:  # ml_collections applies sys.argv's overrides to the default here
    config = config_flags.DEFINE_config_file(
        'config', default, 'Experiment config file; override fields with '
        '--config.<field>=value.')
  except (AttributeError, KeyError) as e:
    _exit_unknown_field(e, sys.argv[1:], default)
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
    run(train_and_evaluate, config.value, workdir.value, cache_dir.value)

  return main
