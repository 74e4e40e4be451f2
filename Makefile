# The whole set-up on a fresh machine is `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= /tmp/coherence_jax_demo
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,experiments]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.real_vs_random.main --workdir=$(DEMO_WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "slow and not long" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.bench_coherence

clean:
	rm -rf $(VENV) build *.egg-info
