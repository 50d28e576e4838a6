# Every target builds what it needs from the repository alone: a venv, then the package into it.
#   make run    the edge daemon (base install, no TensorFlow) on the shipped model and sample faces
#   make test   the test suite (installs the [train,dev] extras into .venv, and [train-jax] into .venv-jax
#               so training is also tested on a machine without TensorFlow)
#   make test-fast  the quick loop while editing (about a minute): no slow/fer/backoff/long tests, and TensorFlow,
#               Keras, JAX and torch made unimportable, as on the Pi (tests that need them skip)
#   make pi-check RELEASE=bookworm|trixie   (as root) the README's Pi install in an emulated Debian arm64
#               root, its events compared with x86's; not part of `make test` (minutes of emulation)
#   make image  (as root) a flashable SD-card image (build/image/*.img.xz): Debian trixie arm64 with the
#               service installed by systemd/install.sh, for a Pi 3/4/400/Zero 2 W with a USB webcam
#               (docs/image.md); minutes to an hour, not part of `make test`
#   make boot-check  boots that image under qemu-system-aarch64 with systemd as PID 1 and checks the
#               settings file, READY, the watchdog, the last will and clean shutdown on a host Mosquitto
#   make model  reproduces the shipped default model from FER-2013 (resumable; see MODEL_CARD.md);
#               PHOTOS=DIR RUNS=runs-v2 adds the photo source (Model v2)
PYTHON ?= python3
VENV ?= .venv
EDGE_VENV ?= .venv-edge
JAX_VENV ?= .venv-jax
FER ?= ../shared/data/fer2013

# The shipped default model's recipe (MODEL_CARD.md). Tune on train/, choose on test/.
# Three runs of one recipe: two teachers (60 and 30 epochs), then the shipped student distilled from both,
# whose last 10 epochs' weights are averaged (kept unless its best epoch validates clearly better).
RUNS ?= runs
MODEL_RUN ?= $(RUNS)/student60
RECIPE = --arch vgg --batch-size 64 --lr 2e-3 --weight-decay 0.05 --dropout 0.4 --label-smoothing 0.1 \
	--class-weight-power 0.5 --random-erasing 0.25 --patience 0 --seed 1337 --quiet
DISTILL = --teacher $(RUNS)/vgg60,$(RUNS)/vgg30 --distill-alpha 0.6 --distill-temperature 2 --average-last 10
# Model v2 (MODEL_CARD.md, "Model v2 plan"): `make model PHOTOS=../shared/data/photos RUNS=runs-v2` trains every
# run on FER-2013 plus the photos' person-disjoint train half, cut by the daemon's detector and framing, with
# the zoom range widened to the measured framing noise; empty (the default) reproduces the shipped model.
PHOTOS ?=
PHOTO_FLAGS = $(if $(PHOTOS),--photos $(PHOTOS) --augment-zoom 0.17)

# $(call train,RUN_DIR,FLAGS): starts the run, continues it from its last finished epoch, or (metrics.json is
# written last) leaves a finished run alone.
train = if [ -f $(1)/metrics.json ]; then echo "$(1): finished"; else \
	if [ -f $(1)/checkpoints/state.json ]; then resume=--resume; else resume=; fi; \
	$(VENV)/bin/emotion-train --data $(FER) $(PHOTO_FLAGS) --out $(1) $(2) $$resume; fi

.PHONY: run test test-fast lint model clean pi-check image boot-check

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

$(JAX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/pip install -q --upgrade pip
	$(JAX_VENV)/bin/pip install -q -e '.[train-jax]'
	touch $@

run: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/emotion-edge --source edge/samples --publish stdout

test: $(VENV)/.installed $(JAX_VENV)/.installed
	$(VENV)/bin/python -m ruff check .
	EMOTION_TEST_JAX_PYTHON=$(JAX_VENV)/bin/python $(VENV)/bin/python -m pytest

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m pytest --fast -q

lint: $(VENV)/.installed
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .

# The x86 side of the comparison runs the clone's code with this interpreter (the base install by default).
RELEASE ?= bookworm
PI_X86_PYTHON ?= $(EDGE_VENV)/bin/python
pi-check: $(if $(filter $(EDGE_VENV)/bin/python,$(PI_X86_PYTHON)),$(EDGE_VENV)/.installed)
	tools/pi-check.sh --release $(RELEASE) --x86-python $(PI_X86_PYTHON)

# The image's build reads the settings step's defaults with this interpreter (PyYAML from the base install).
IMAGE_X86_PYTHON ?= $(EDGE_VENV)/bin/python
image: $(if $(filter $(EDGE_VENV)/bin/python,$(IMAGE_X86_PYTHON)),$(EDGE_VENV)/.installed)
	tools/image.sh --x86-python $(IMAGE_X86_PYTHON)

# The host side (Mosquitto, the camera stream, the MQTT subscriber) runs in the base install's venv.
IMAGE ?= build/image/emotion-edge-trixie-arm64.img.xz
boot-check: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/python tools/boot_check.py --image $(IMAGE)

# Resumable: rerunning `make model` after an interruption continues each run from its last finished epoch.
model: $(VENV)/.installed
	@$(call train,$(RUNS)/vgg60,$(RECIPE) --epochs 60)
	@$(call train,$(RUNS)/vgg30,$(RECIPE) --epochs 30)
	@$(call train,$(MODEL_RUN),$(RECIPE) --epochs 60 $(DISTILL))
	$(VENV)/bin/emotion-convert $(MODEL_RUN) --data $(FER) --out $(MODEL_RUN)/default.tflite
	$(VENV)/bin/emotion-convert evaluate --model $(MODEL_RUN)/model.keras --compare $(MODEL_RUN)/default.tflite \
		--data $(FER) --split test --tta-flip --json $(MODEL_RUN)/evaluation.json
	$(if $(PHOTOS),$(VENV)/bin/python benchmarks/photo_accuracy.py --data $(PHOTOS) --split held-out \
		--model $(MODEL_RUN)/default.tflite --per-label --json $(MODEL_RUN)/photos-held-out.json)
	mkdir -p edge/models
	cp $(MODEL_RUN)/default.tflite $(MODEL_RUN)/default.json edge/models/

clean:
	rm -rf $(VENV) $(EDGE_VENV) build *.egg-info .pytest_cache .ruff_cache
