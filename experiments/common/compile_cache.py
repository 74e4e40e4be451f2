"""JAX's persistent compilation cache for an experiment's runs.

A run compiles its training step, the coherence measurements and the robust
aggregators' selection networks (seconds on CPU, a minute for a ResNet-50 on
an accelerator). With the cache on, XLA's compiled programs are saved as
files and a later run with the same shapes and flags loads them instead of
compiling again: a resumed run, a config re-run with other labels or seeds,
every host's next job. JAX writes the entries from process 0 only and
recompiles (with a warning) when an entry cannot be read.

Example (an experiment's main, before its first JAX computation):
  >>> cache_folder(None, '/tmp/run', configured=None)
  '/tmp/run/compilation_cache'
  >>> cache_folder('off', '/tmp/run', configured='/cache') is None
  True
  >>> enable(flags.FLAGS.compilation_cache_dir, workdir)  # sets JAX's config
"""

import os
from typing import Optional

import jax

DEFAULT_SUBDIR = 'compilation_cache'
OFF = 'off'


def cache_folder(cache_dir: Optional[str], workdir: str,
                 configured: Optional[str]) -> Optional[str]:
  """The persistent cache's folder, or None for no cache.

  Args:
    cache_dir: the --compilation_cache_dir flag: a folder; None: the one
      already `configured` for JAX, else `<workdir>/compilation_cache`;
      'off': no persistent cache.
    workdir: the run's output folder.
    configured: JAX's `jax_compilation_cache_dir` now (e.g. from the
      `JAX_COMPILATION_CACHE_DIR` environment variable), or None.

  Raises:
    ValueError: cache_dir is empty (name a folder, or pass 'off').
  """
  if cache_dir == OFF:
    return None
  if cache_dir is not None and not cache_dir.strip():
    raise ValueError("--compilation_cache_dir: got ''; name a folder, or "
                     "pass 'off' to compile every run afresh.")
  if cache_dir is not None:
    return cache_dir
  return configured or os.path.join(workdir, DEFAULT_SUBDIR)


def enable(cache_dir: Optional[str], workdir: str) -> Optional[str]:
  """Points JAX's persistent compilation cache at `cache_folder(...)`.

  Returns the folder, or None when the cache is off. Call it before the
  first compilation.
  """
  folder = cache_folder(cache_dir, workdir,
                        jax.config.jax_compilation_cache_dir)
  jax.config.update('jax_compilation_cache_dir', folder)
  return folder
