# The two entry points of the README. Both set everything up first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TRIPWIRE_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast lint docs bench-fast

$(BIN)/tripwire: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so that nothing pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,export,serve,postgres]'
	# pytorch-ood, for the tests that cross-check our detectors with its: without its
	# dependencies, which would pull torchvision and another torch.
	$(BIN)/pip install --quiet --no-deps pytorch-ood==0.4.0
	touch $@

setup: $(BIN)/tripwire

demo: setup
	$(BIN)/tripwire demo

test: setup
	$(BIN)/ruff check src tests research benchmarks docs/hooks
	$(BIN)/mypy src
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	TRIPWIRE_REQUIRE_PYTORCH_OOD=1 TRIPWIRE_REQUIRE_DATA=1 TRIPWIRE_REQUIRE_POSTGRES=1 $(BIN)/pytest -q

# The everyday loop: no data files, no slow tests (measured in research/notebook.md).
test-fast: setup
	$(BIN)/pytest -q -m "not slow and not data"

lint: setup
	$(BIN)/ruff check src tests research benchmarks docs/hooks
	$(BIN)/ruff format --check src tests research benchmarks docs/hooks
	$(BIN)/mypy src

# The documentation site, built strictly (a broken link or reference fails), into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench-fast: setup
	$(BIN)/tripwire --quiet bench --suite mnist-lenet --fast --model lenet-mnist --out results/fast
	$(BIN)/tripwire --quiet bench --suite cifar10-resnet --fast --out results/fast-cifar10-resnet
	$(BIN)/tripwire --quiet bench --suite cifar10-vgg16 --fast --out results/fast-cifar10-vgg16
