# The two commands of the README: `make demo` and `make test`. Everything else is set up on the way;
# `make test-fast` is the inner loop: the suite without the tests marked slow (end to end: servers, a browser,
# torchrun ranks, packaging, design loops, CLI training runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch from the local wheel cache; real users may pick any torch>=2.3 (pyproject keeps it open).
TORCH_SPEC ?= torch==2.13.0

export DAGSTER_HOME ?= $(abspath .dagster_home)
export CRRECON_HOME ?= $(abspath data)

.PHONY: install demo dev test test-fast lint bench clean validate check-defs gpu-check
install: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

# [k8s] for the tests: dagster-postgres (the Postgres-backed instance test), dagster-k8s (the step pods' tags parsed)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,k8s]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install
	$(BIN)/python -m crrecon_pipeline.defs.demo

dev: install
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

test: lint check-defs
	$(BIN)/python -m pytest -q -ra

test-fast: lint
	$(BIN)/python -m pytest -q -ra -m "not slow"

lint: install
	$(BIN)/ruff check crrecon_pipeline crrecon_pipeline_tests benchmarks

validate: install
	$(BIN)/dagster definitions validate

# Dagster's project check ([tool.dg] in pyproject.toml): the code location loads, with its component YAML
check-defs: install
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs

bench: install
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_simulator.py --fidelity multislice --naive-rows 1
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_records.py
	$(BIN)/python benchmarks/bench_design.py

clean:
	rm -rf $(VENV) data .dagster_home/* *.egg-info

# The GPU check (benchmarks/gpu_check.py): correctness CPU vs CUDA and throughput, <= ~5 min on one GPU; the JSON
# goes to $(OUT)/gpu_check.json when OUT is set. Without CUDA: one line, then a short CPU smoke run.
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py
