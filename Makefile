# fgsm-repro: `make reproduce-all` runs every implemented experiment and rebuilds the report;
# `make test` installs what it needs and runs the tests (`make test-fast`: the unit tier). Both
# start from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# auto: paper where JAX sees an accelerator, fast on a CPU (the first line of output says which).
PROFILE ?= auto
# Offline copies of the datasets (air-gapped machines): used when the folder exists,
# otherwise TFDS downloads the data.
OFFLINE_DATA ?= $(firstword $(wildcard ../shared/data))
PYTEST_ARGS ?=
# cpu, or cuda: the CUDA 12 plugin of the same jaxlib beside the CPU one (JAX then runs on the GPU
# it finds): `make install ACCEL=cuda` (or any target with ACCEL=cuda).
ACCEL ?= cpu
ACCEL_STAMP := $(if $(filter cuda,$(ACCEL)),$(VENV)/.cuda)

.PHONY: install data test test-fast reproduce-all baselines tolerances report lint clean-runs bench bench-deps gpu-check

$(BIN)/fgsm-repro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.cuda: $(BIN)/fgsm-repro
	$(BIN)/pip install --quiet -e '.[dev,cuda]'
	touch $@

install: $(BIN)/fgsm-repro $(ACCEL_STAMP)

# PyTorch (CPU build, pinned) and torchattacks, for `make bench` and the tests that check the
# benchmark compares like with like; torchattacks without its deps (torchvision pulls CUDA torch).
$(VENV)/.bench-deps: $(BIN)/fgsm-repro
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	touch $@

bench-deps: $(VENV)/.bench-deps

data: install
	$(BIN)/fgsm-repro data prepare mnist $(if $(OFFLINE_DATA),--from $(OFFLINE_DATA)/mnist)
	$(BIN)/fgsm-repro data prepare cifar10 $(if $(OFFLINE_DATA),--from $(OFFLINE_DATA)/cifar10-jpeg/cifar10-jpeg.tar.gz)

test: data bench-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# The unit tier: no PyTorch, no subprocesses, no regression runs.
test-fast: data
	$(BIN)/pytest -m "not slow and not bench" $(PYTEST_ARGS)

reproduce-all: data
	$(BIN)/fgsm-repro reproduce --profile $(PROFILE)

# The regression baselines the tests compare with (tests/baselines/*.ci.json): written only here.
# CONFIGS=... (claim IDs or config files, e.g. a new experiment's) records only those.
baselines: data
	$(BIN)/fgsm-repro reproduce $(CONFIGS) --profile ci --update-baselines

# The regression tolerances (tests/baselines/tolerances.json), from the spread of the ci numbers
# under numerically equivalent runs and other seeds (EXPERIMENTS=... for some; OTHER_JAX=DIR adds
# a run with the jax/jaxlib installed there by pip install --target).
tolerances: data
	$(BIN)/python tests/baselines/measure_variability.py $(EXPERIMENTS) $(if $(OTHER_JAX),--other-jax $(OTHER_JAX))

report: install
	$(BIN)/fgsm-repro report

bench: bench-deps
	$(BIN)/fgsm-repro bench

# On a GPU machine: the unit tests of the attacks and training and one fast training on the
# accelerator, with its seconds per epoch; says so and stops where JAX sees no GPU.
gpu-check: install
	$(BIN)/python -m fgsm_repro.gpu_check

lint: install
	$(BIN)/ruff check fgsm_repro tests

clean-runs:
	rm -rf runs
