# Two set-up commands, each self-sufficient on a fresh machine:
#   make demo   creates .venv, installs segnet, runs the main job on the embedded default
#   make test   creates .venv, installs segnet with its test extras, runs the tests
#   make test-fast   the edit-test loop: every test but those marked slow (end-to-end runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,export,serve]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segnet demo

# one pytest-xdist worker per core, at most 4, each with one torch thread (tests/conftest.py);
# worksteal keeps both cores busy to the end when a long test comes last
XDIST := -n auto --maxprocesses 4 --dist worksteal

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
