"""Sphinx configuration: MyST pages and an API reference from the docstrings.

Build with `make docs` (warnings are errors); the site lands in docs/_build/html.
"""

import os
import sys

sys.path.insert(0, os.path.abspath('..'))

project = 'coherence_jax'
author = 'coherence_jax authors'
copyright = '2026, coherence_jax authors'  # pylint: disable=redefined-builtin
release = '0.1.0'

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

myst_enable_extensions = ['dollarmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3

autosummary_generate = True
templates_path = ['_templates']
add_module_names = False
autodoc_default_options = {'members': True, 'undoc-members': False}
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Docstrings write code in single backticks (Markdown habit): render it as code.
default_role = 'code'

html_theme = 'furo'
html_title = 'coherence_jax'
html_static_path = []
napoleon_use_ivar = True  # NamedTuple fields: one description each
napoleon_use_rtype = False  # 'Returns: type – text' in one entry


# The docstrings are plain text with Markdown habits (`code`, a * b, |x|,
# `scale`²). Before napoleon reads them, escape what reStructuredText would
# take for markup, outside code spans and doctest blocks.
_PUNCT_AFTER = set(' \t-.,:;!?\\/\'")]}>')
_PUNCT_BEFORE = set(' \t-:/\'"([{<')


def _escape_prose(text):
  """`text` with *, |, `word_` and glued code spans made literal-safe."""
  out = []
  in_code = False
  n = len(text)
  for i, ch in enumerate(text):
    if ch == '`':
      if not in_code:
        # A span must start after whitespace or opening punctuation.
        if i > 0 and text[i - 1] not in _PUNCT_BEFORE and text[i - 1] != '\n':
          out.append('\\ ')
        in_code = True
        out.append(ch)
      else:
        in_code = False
        out.append(ch)
        if i + 1 < n and text[i + 1] not in _PUNCT_AFTER and text[i + 1] != '\n':
          out.append('\\ ')
      continue
    if in_code:
      out.append(ch)
      continue
    if ch == '*':
      line_start = text.rfind('\n', 0, i) + 1
      is_bullet = (text[line_start:i].strip() == '' and i + 1 < n
                   and text[i + 1] == ' ')
      out.append(ch if is_bullet else '\\*')
      continue
    if ch == '|':
      out.append('\\|')
      continue
    if (ch == '_' and i > 0 and (text[i - 1].isalnum() or text[i - 1] == ')')
        and (i + 1 == n or not (text[i + 1].isalnum() or text[i + 1] == '_'))):
      out.append('\\_')
      continue
    out.append(ch)
  if in_code:  # an unterminated code span: make its backtick literal
    k = len(out) - 1 - out[::-1].index('`')
    out[k] = '\\`'
  return ''.join(out)


def _escape_docstring(app, what, name, obj, options, lines):
  """Escape each paragraph's prose; doctest blocks stay as they are."""
  del app, what, name, obj, options
  result, para, in_doctest = [], [], False

  def flush():
    if para:
      result.extend(_escape_prose('\n'.join(para)).split('\n'))
      para.clear()

  for line in lines:
    stripped = line.strip()
    if stripped.startswith('>>>'):
      flush()
      in_doctest = True
    if in_doctest:
      if stripped:
        result.append(line)
        continue
      in_doctest = False
    if not stripped:
      flush()
      result.append(line)
    else:
      para.append(line)
  flush()
  lines[:] = result


def setup(app):
  app.connect('autodoc-process-docstring', _escape_docstring, priority=100)
