# The two README commands: `make demo` and `make test`. Both create .venv when it is missing and
# install the project (editable, with its compiled op) when pyproject.toml, setup.py or cuda/
# changed since the last install; otherwise they start at once.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# pip prints one line per local index it cannot use; they are noise here
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

export PATH := $(BIN):$(PATH)
export RAY_CHDIR_TO_TRIAL_DIR ?= 0
export MAX_JOBS ?= 2

# `make gpu-check OUT=DIR` uses the machine's own python and torch (a GPU machine has no .venv
# and no registry to install one from): PYTHONPATH=platform, nothing installed
OUT ?= gpu-check
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

.PHONY: install demo test lint bench clean gpu-check cluster-rehearsal

# a new .venv holds torch's CUDA build and the rest: ~7 GB (a full disk failed an install
# half-way with pip's "[Errno 28] No space left on device")
NEED_GB := 8
$(BIN)/python:
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "make: .venv needs about $(NEED_GB) GB free here (torch's CUDA build and the rest); $$free GB are free: free some space and run make again" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard cuda/*)
	$(BIN)/pip install -q "setuptools>=68" wheel ninja torch==2.14.1 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q --no-build-isolation -e '.[test]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import vidtempo.ops.native as n; assert n.load() is not None, n.why_not()"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check platform jobs datasets tests setup.py

test: install lint
	$(BIN)/python -m pytest tests

demo: install
	$(BIN)/vidtempo demo

# the README's cluster workflow on this machine: a local S3 server, tracking server and a Ray
# head in token mode whose autoscaler adds nodes on demand (minutes on 2 cores; files under
# rehearsal/)
cluster-rehearsal: install
	$(BIN)/python -m vidtempo.tooling.rehearsal --workdir rehearsal

bench: install
	$(BIN)/vidtempo bench op

gpu-check:
	PYTHONPATH=$(CURDIR)/platform $(GPU_PYTHON) -m vidtempo.tooling.gpu_check --out $(OUT)

clean:
	rm -rf $(VENV) build platform/vidtempo/*.so platform/*.egg-info
