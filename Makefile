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

# Two workers, each a whole test file at a time (its module fixtures made once): the tests wait on subprocesses and Ray
# as much as they compute, so the suite takes about two thirds of its time on one worker.
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadfile
