"""Sphinx configuration: MyST pages and an API reference from the docstrings.

Build with `make docs` (warnings are errors); the site lands in docs/_build/html.
"""

import os
import posixpath
import re
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, ROOT)

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
suppress_warnings = ['myst.header']  # the mirrored reports start at any level

myst_enable_extensions = ['dollarmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3

autosummary_generate = True
templates_path = ['_templates']
add_module_names = False
autodoc_default_options = {'members': True, 'undoc-members': False}
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented'
autodoc_typehints_format = 'short'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Docstrings write code in single backticks (Markdown habit): render it as code.
default_role = 'code'

# Flax NNX modules are built by a metaclass `__call__(cls, *args, **kwargs)`:
# show their `__init__` signature instead (autodoc's own list of such
# metaclasses is private, hence the guard).
for _module in ('sphinx.ext.autodoc._dynamic._signatures',
                'sphinx.ext.autodoc._legacy_class_based._documenters'):
  try:
    _mod = __import__(_module, fromlist=['_METACLASS_CALL_BLACKLIST'])
    _mod._METACLASS_CALL_BLACKLIST = _mod._METACLASS_CALL_BLACKLIST | {
        'flax.nnx.pytreelib.PytreeMeta.__call__'}
  except (ImportError, AttributeError):
    pass

html_theme = 'furo'
html_title = 'coherence_jax'
html_static_path = ['_static']
html_css_files = ['custom.css']
napoleon_use_ivar = True  # NamedTuple fields: one description each
napoleon_use_rtype = False  # 'Returns: type – text' in one entry
napoleon_attr_annotations = False  # field types: internal jaxlib paths


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


# The pages link the repository's other Markdown (benchmarks/README_*.md,
# results/, launch/README.md) by their paths in the checkout, so the links work
# on a code host. For the site those folders are mirrored into docs/_repo/
# (generated, git-ignored) and every relative link is rewritten to its page
# there, or to a page of docs/ itself.
MIRRORED = ('benchmarks', 'launch', 'results')
MIRROR = '_repo'
_LINK = re.compile(r'(!?\[[^\]]*\]\()([^)\s]+)(\))')


def _mirror_repository_pages():
  """Copy the .md and .png files of MIRRORED into docs/_repo/."""
  target = os.path.join(DOCS, MIRROR)
  shutil.rmtree(target, ignore_errors=True)
  for folder in MIRRORED:
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith(('.md', '.png')):
          src = os.path.join(dirpath, name)
          dst = os.path.join(target, os.path.relpath(src, ROOT))
          os.makedirs(os.path.dirname(dst), exist_ok=True)
          shutil.copyfile(src, dst)


def _site_link(docname, link):
  """`link` as written in the repository file of `docname`, for the site."""
  if re.match(r'^[a-z][a-z0-9+.-]*:', link) or link.startswith(('#', '/')):
    return link
  path, hash_, anchor = link.partition('#')
  if docname.startswith(MIRROR + '/'):
    repo_file = docname[len(MIRROR) + 1:]
  else:
    repo_file = 'docs/' + docname
  target = posixpath.normpath(
      posixpath.join(posixpath.dirname(repo_file), path))
  if target == 'README.md':
    site = 'index.md'
  elif target.startswith('docs/'):
    site = target[len('docs/'):]
  elif target.split('/')[0] in MIRRORED and target.endswith(('.md', '.png')):
    site = MIRROR + '/' + target
  else:  # a source file or folder: not part of the site, shown as a path
    return None
  rel = posixpath.relpath(site, posixpath.dirname(docname) or '.')
  return rel + hash_ + anchor


def _rewrite_links(app, docname, source):
  """Point the Markdown links of a page at the site's pages."""
  del app
  def fix(match):
    site = _site_link(docname, match.group(2))
    if site is None:  # keep the text, drop the link
      text = match.group(1)[:-2].lstrip('!').lstrip('[')
      return text if text.startswith('`') else '`%s`' % text
    return match.group(1) + site + match.group(3)
  lines, fence = [], None
  for line in source[0].split('\n'):
    marker = re.match(r'\s*(```+|~~~+)', line)
    if fence is None and marker:
      fence = marker.group(1)
    elif fence is not None and marker and marker.group(1).startswith(fence):
      fence = None
    elif fence is None:  # links outside code blocks and `code spans`
      spans = [m.span() for m in re.finditer(r'`[^`]*`', line)]
      line = _LINK.sub(
          lambda m: m.group(0) if any(a < m.start() < b for a, b in spans)
          else fix(m), line)
    lines.append(line)
  source[0] = '\n'.join(lines)


_mirror_repository_pages()


def setup(app):
  app.connect('autodoc-process-docstring', _escape_docstring, priority=100)
  app.connect('source-read', _rewrite_links)
