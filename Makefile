# voxray: the README's commands. Every target creates the environment first if it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
STAMP := .venv/.voxray-synced
SHARED ?= $(abspath ../shared)
OUT ?= runs/realdata
DATA ?=
CKPT ?= runs/demo/model.pt
PYTEST_ARGS ?=

.PHONY: help setup browser demo test test-fast bench gpu-check lint format serve train-realdata clean

help:
	@echo "make demo   - create the environment if missing, then run the end-to-end demo"
	@echo "make test   - create the environment if missing, then run the test suite"
	@echo "make bench  - write BENCHMARKS.md"
	@echo "make gpu-check - GPU training/extraction throughput + memory (bf16, fp16) -> BENCHMARKS.md"
	@echo "make serve CKPT=model.pt - speaker service on http://127.0.0.1:8000 (docs: /docs; keys: keys.json)"
	@echo "make train-realdata OUT=DIR - train on ../shared/data/speech (10 min on 2 cores)"
	@echo "make lint   - ruff check + format check + layer contracts (lint-imports)"
	@echo "make browser - Debian's chromium + chromedriver for the /ui browser test (apt, once)"

# Idempotent: installs uv if absent, then the locked environment (re-synced when the lock changes).
$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

setup: $(STAMP)

# The /ui page's test (tests/serve/test_clients.py) drives Debian's chromium through its
# chromedriver; installed once from apt (a no-op when both are there), never downloaded.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium and chromedriver are installed"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

demo: $(STAMP)
	$(RUN) python -m ray_jobs.demo $(if $(DATA),--data-root $(DATA),)

test: $(STAMP)
	$(RUN) pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(RUN) pytest -m "not ray and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(RUN) python -m ray_jobs.bench --output BENCHMARKS.md $(if $(REF),--reference-root $(REF),)

# Ray-free (the GPU image has torch but no Ray): skips with a message where there is no CUDA.
gpu-check: $(STAMP)
	$(RUN) python -m ray_jobs.gpu_check --output BENCHMARKS.md

# API keys: `uv run python -m serve.keys add me --scopes admin --file keys.json` first
# (README "Security"); KEYS= (empty) runs keyless on loopback, for development only.
KEYS ?= keys.json
serve: $(STAMP)
	$(RUN) python -m serve --checkpoint $(CKPT) --db speakers.db --port 8000 \
		$(if $(KEYS),--api-keys-file $(KEYS),--no-auth)

lint: $(STAMP)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports --no-logo

format: $(STAMP)
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

train-realdata: $(STAMP)
	$(RUN) python -m ray_jobs.train --config ray_jobs/configs/realdata.yaml \
		--data-root $(SHARED)/data/speech/librispeech-train-clean-100 \
		--set data.noise=$(SHARED)/data/noise --set data.rir=$(SHARED)/data/rir \
		--output $(OUT) --max-minutes 8

clean:
	rm -rf runs .pytest_cache .ruff_cache
