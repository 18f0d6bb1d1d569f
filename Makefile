# The two entry points of the README. Both set everything up first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TRIPWIRE_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test lint bench-fast

$(BIN)/tripwire: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so that nothing pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/tripwire

demo: setup
	$(BIN)/tripwire demo

test: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

bench-fast: setup
	$(BIN)/tripwire --quiet bench --suite mnist-lenet --fast --model lenet-mnist --out results/fast
	$(BIN)/tripwire --quiet bench --suite cifar10-resnet --fast --out results/fast-cifar10-resnet
	$(BIN)/tripwire --quiet bench --suite cifar10-vgg16 --fast --out results/fast-cifar10-vgg16
