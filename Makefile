# Every target builds what it needs from the repository alone: a venv, then the package into it.
#   make run    the edge daemon (base install, no TensorFlow) on the shipped model and sample faces
#   make test   the test suite (installs the [train,dev] extras into .venv)
#   make model  reproduces the shipped default model from FER-2013 (resumable; see MODEL_CARD.md)
PYTHON ?= python3
VENV ?= .venv
EDGE_VENV ?= .venv-edge
FER ?= ../shared/data/fer2013

# The shipped default model's recipe (MODEL_CARD.md). Tune on train/, choose on test/.
MODEL_RUN ?= runs/default
MODEL_FLAGS = --arch vgg --epochs 60 --batch-size 64 --lr 2e-3 --weight-decay 0.05 --dropout 0.4 \
	--label-smoothing 0.1 --class-weight-power 0.5 --random-erasing 0.25 --patience 0 --seed 1337 --quiet

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

# Resumable: rerunning `make model` after an interruption continues from the last finished epoch.
model: $(VENV)/.installed
	@if [ -f $(MODEL_RUN)/checkpoints/state.json ]; then resume=--resume; else resume=; fi; \
	$(VENV)/bin/emotion-train --data $(FER) --out $(MODEL_RUN) $(MODEL_FLAGS) $$resume
	$(VENV)/bin/emotion-convert $(MODEL_RUN) --data $(FER) --out $(MODEL_RUN)/default.tflite
	$(VENV)/bin/emotion-convert evaluate --model $(MODEL_RUN)/model.keras --compare $(MODEL_RUN)/default.tflite \
		--data $(FER) --split test --tta-flip --json $(MODEL_RUN)/evaluation.json
	mkdir -p edge/models
	cp $(MODEL_RUN)/default.tflite $(MODEL_RUN)/default.json edge/models/

clean:
	rm -rf $(VENV) $(EDGE_VENV) build *.egg-info .pytest_cache .ruff_cache
