# streamrec — the README's two commands: `make demo` and `make test`.
# Both create a virtual environment in .venv and install what they need first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first, pinned, so pip keeps this CPU build instead of pulling
# a multi-GB CUDA build as a dependency. Extra pip options for it (e.g. an index
# with CPU wheels on a machine without a local copy) go in TORCH_PIP_ARGS.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-integration clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streamrec needs Python 3.11 or newer: run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

demo: install
	$(VENV)/bin/streamrec demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration tests/reliability $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .streamrec-data .pytest_cache .hypothesis
