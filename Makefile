# Every target builds what it needs from the repository alone: a venv, then the package into it.
#   make run    the edge daemon (base install, no TensorFlow) on the shipped model and sample faces
#   make test   the test suite (installs the [train,dev] extras into .venv)
#   make model  reproduces the shipped default model from FER-2013 (resumable; see MODEL_CARD.md)
PYTHON ?= python3
VENV ?= .venv
EDGE_VENV ?= .venv-edge
FER ?= ../shared/data/fer2013

.PHONY: run test lint model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,dev]'
	touch $@

$(EDGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install -q --upgrade pip
	$(EDGE_VENV)/bin/pip install -q -e .
	touch $@

run: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/emotion-edge --source edge/samples --publish stdout

test: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .

clean:
	rm -rf $(VENV) $(EDGE_VENV) build *.egg-info .pytest_cache .ruff_cache
