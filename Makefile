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

# Two workers, each a whole test file at a time (its module fixtures made once; the files that read one shared run
# count as one, tests/conftest.py).
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadfile
