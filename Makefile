# Every target creates .venv when it is missing; nothing here needs the Hugging Face Hub.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

$(BIN)/.installed: pyproject.toml requirements-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/hf-unlearn demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check hf_unlearn tests benchmarks recipes

# Regenerates benchmarks/results/cpu-tiny/ (BENCHMARKS.md reads it): about an hour on 2 CPU cores.
bench: install
	$(BIN)/python benchmarks/run.py --setting cpu-tiny --threads 1
	$(BIN)/python benchmarks/scaling.py --setting cpu-tiny --threads 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
