"""experiments/common/compile_cache: which folder, and that JAX writes there."""

import os
import subprocess
import sys
import textwrap

import pytest

from experiments.common import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('flag,configured,want', [
    (None, None, '/w/compilation_cache'),   # default: inside the workdir
    (None, '/env', '/env'),                 # JAX_COMPILATION_CACHE_DIR wins
    ('/mine', '/env', '/mine'),             # the flag wins over both
    ('off', '/env', None),                  # off: no persistent cache
])
def test_cache_folder(flag, configured, want):
  assert compile_cache.cache_folder(flag, '/w', configured) == want


def test_empty_flag_names_the_fix():
  with pytest.raises(ValueError, match="--compilation_cache_dir.*'off'"):
    compile_cache.cache_folder(' ', '/w', None)


def test_second_process_loads_what_the_first_compiled(tmp_path):
  """In fresh processes without the test session's cache: the first writes
  <workdir>/compilation_cache, the second reads it instead of compiling."""
  child = textwrap.dedent(f'''
      import jax, jax.numpy as jnp
      from experiments.common import compile_cache
      folder = compile_cache.enable(None, {str(tmp_path)!r})
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
      hits = []
      jax.monitoring.register_event_listener(
          lambda name, **kw: hits.append(name)
          if name == '/jax/compilation_cache/cache_hits' else None)
      print(folder, float(jax.jit(lambda x: jnp.sin(x) * 3)(1.0)), len(hits))
  ''')
  env = {k: v for k, v in os.environ.items()
         if k != 'JAX_COMPILATION_CACHE_DIR'}
  runs = [subprocess.run([sys.executable, '-c', child], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
          for _ in range(2)]
  for out in runs:
    assert out.returncode == 0, out.stderr[-3000:]
  first, second = (out.stdout.split() for out in runs)
  folder = str(tmp_path / 'compilation_cache')
  assert first[0] == second[0] == folder
  assert os.listdir(folder), 'the first run wrote no cache entry'
  assert first[1] == second[1]
  assert (first[2], second[2]) == ('0', '1'), (first, second)
