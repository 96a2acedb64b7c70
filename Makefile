# gantk: two commands set a fresh machine up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-full test lint man bench models training-data gpu-check gpu-wheels gpu-data clean

install: $(STAMP)

# Re-install whenever the package metadata changes; the editable install picks up code edits.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh out/demo

# The same tour at larger sizes (bigger GAN, metrics on more images): 499 s measured on 2 cores.
demo-full: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" DEMO_FULL=1 bash examples/demo.sh out/demo-full

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gantk tests bench examples scripts
	$(BIN)/ruff format --check gantk tests bench examples scripts
	# The layering of docs/architecture.md (contracts in pyproject.toml; every import counts).
	$(BIN)/lint-imports

man: $(STAMP)
	$(BIN)/python -m gantk.cli.manpages man

bench: $(STAMP)
	$(BIN)/python bench/data_throughput.py --out out/bench
	$(BIN)/python bench/train_speed.py --out out/bench
	$(BIN)/python bench/metrics_speed.py --out out/bench
	$(BIN)/python bench/fingerprint_speed.py --out out/bench
	$(BIN)/python bench/texture_speed.py --out out/bench
	# Kernel vs PyTorch paths: real shapes on a GPU, a smoke run of the reference paths on a CPU.
	$(BIN)/python bench/ops.py --out out/bench $$($(BIN)/python -c "import torch; print('' if torch.cuda.is_available() else '--small')")

# The training data of the bundled models: Debian packages (installed with apt-get) and the
# held-out split, with a manifest (data/training/manifest.csv). Tests and demos never need it.
training-data: $(STAMP)
	scripts/training_data.sh data/training

# Retrain the bundled models (hours on a CPU; resumable: run again to continue).
models: $(STAMP)
	scripts/train_stego_100.sh runs/stego-100-v2
	# CSS/CRS's seam and repetition classifiers for the Mixer's 64 px (about 7 min on one
	# thread), before the Mixer's script scores it with them.
	$(BIN)/gantk train texture-classifiers data/training/texture-train \
	  --heldout data/training/texture-heldout --out gantk/models/texture-classifiers.safetensors \
	  --threads 1 --device cpu --force
	scripts/train_texture_mixer.sh runs/texture-mixer-v2

# Everything a GPU can tell us in one call budgeted at 540 s (scripts/gpu_check.sh; results in
# $$OUT or out/gpu-check). No venv needed on the GPU machine: its python3 runs this checkout.
# DEVICE=cpu is the rehearsal (small shapes, a few minutes; tests/test_gpu_check.py runs it).
DEVICE ?= cuda
GPU_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	DEVICE=$(DEVICE) PY=$(GPU_PY) bash scripts/gpu_check.sh

# Wheels the GPU machine lacks (Python 3.12 there), for the device tool to carry as .whl/.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl lpips==0.1.4 pytorch-fid==0.3.0 PyMaxflow

# A subset of data/training (make training-data) small enough to carry to the GPU machine, for
# gpu-check's step that continues the bundled models' training.
gpu-data: $(STAMP)
	$(BIN)/python scripts/gpu_data.py data/training gpu-data --mib 40

clean:
	rm -rf out runs build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
