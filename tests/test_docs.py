"""The documentation site builds without a warning (`make docs` does the same).

Sphinx with MyST pages and the API reference generated from the docstrings;
`-W` turns every warning (a broken cross-reference, a docstring that does not
parse, a page left out of every toctree) into a failure.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_docs_build_warning_free(tmp_path):
  pytest.importorskip('sphinx')
  pytest.importorskip('myst_parser')
  pytest.importorskip('furo')
  out = tmp_path / 'html'
  proc = subprocess.run(
      [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-b', 'html',
       '-q', '-d', str(tmp_path / 'doctrees'), os.path.join(ROOT, 'docs'),
       str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert not proc.stderr.strip(), proc.stderr
  for page in ('index.html', 'api.html',
               '_autosummary/coherence_jax.coherence_stats.html',
               '_autosummary/coherence_jax.aggregators.winsorized_mean.html',
               'api/aggregators.html'):
    assert (out / page).is_file(), page
  api = (out / '_autosummary/coherence_jax.coherence_stats.html').read_text()
  assert 'microbatch_size' in api  # the signature and docstring rendered
