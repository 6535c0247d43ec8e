# Two commands on a fresh machine: `make demo` (set-up + the main job on the demo corpus) and
# `make test` (set-up + the whole test suite). `make stop` stops the background Prefect services.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export LLAVA_REWARD_PROJECT_DIR := $(CURDIR)
export LLAVA_REWARD_ARTIFACTS ?= $(CURDIR)/artifacts
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_PORT ?= 4200
export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test venv stop status lint

venv: $(STAMP)

# torch and torchvision first, pinned: the only pair that imports here with open_clip (see README).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check flows tasks reward data tests benchmarks

status:
	scripts/services.sh status

stop:
	scripts/services.sh stop
