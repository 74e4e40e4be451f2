# The whole set-up on a fresh machine is `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= /tmp/coherence_jax_demo
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all bench docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,experiments]'
	touch $(STAMP)

# The docs extra: `make docs`, and the docs build test of the slow tier.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(PY) -m experiments.real_vs_random.main --workdir=$(DEMO_WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-slow: $(DOCS_STAMP)
	$(PY) -m pytest -q -n 2 -m "slow and not long" $(PYTEST_ARGS)

test-all: $(DOCS_STAMP)
	$(PY) -m pytest -q -n 2 -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.bench_coherence

# The documentation site (Sphinx + MyST, API reference from the docstrings),
# warnings as errors: docs/_build/html/index.html.
docs: $(DOCS_STAMP)
	rm -rf docs/_autosummary
	$(PY) -m sphinx -E -W --keep-going -b html -q docs docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/_autosummary docs/_repo
