# gantk: two commands set a fresh machine up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint man bench models clean

install: $(STAMP)

# Re-install whenever the package metadata changes; the editable install picks up code edits.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh out/demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gantk tests bench examples
	$(BIN)/ruff format --check gantk tests bench examples

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

# Retrain the bundled models (hours on a CPU; resumable: run again to continue).
models: $(STAMP)
	scripts/train_stego_100.sh runs/stego-100
	scripts/train_texture_mixer.sh runs/texture-mixer

clean:
	rm -rf out runs build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
