# The README's two commands: `make search` and `make test`. Each creates .venv with the pinned
# working set from pyproject.toml on first use (about 2 minutes and 5.4 GB), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: search test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

search: $(VENV)/.installed
	$(PY) search/run.py --space kd.yaml

test: $(VENV)/.installed
	$(PY) -m pytest
