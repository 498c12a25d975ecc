# cvbench: `make bench SCENARIO=startup` and `make test` are all a fresh machine needs.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PY        := .venv/bin/python
SCENARIO  ?= startup
BACKENDS  ?=
CONFIG    ?=
STRICT    ?=
FAST      ?=
RIGOROUS  ?=
RUN       ?=
BASELINE  ?=
NEW       ?= results/latest
STYLE     ?= talk
CI_ARGS   ?=
METRIC    ?= ready
BY        ?= date
PYTEST_ARGS ?=

bench_flags = $(if $(BACKENDS),--backends $(BACKENDS)) $(if $(FAST),--fast) $(if $(RIGOROUS),--rigorous) \
              $(if $(CONFIG),--config $(CONFIG)) $(if $(STRICT),--strict)

.PHONY: help setup bench charts compare ci-bench baseline history test lint clean sweep check-venv

help: ## show this help
	@echo "cvbench: containers versus VMs, measured"
	@echo
	@echo "  make bench SCENARIO=startup|memory|syscall|isolation|disk|network|all [BACKENDS=a,b] [FAST=1|RIGOROUS=1]"
	@echo "             [CONFIG=path/to/config.json] [STRICT=1: exit 1 if a cross-check is off by >10%]"
	@echo "  make test"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 14

setup: ## install packages, venv, guest kernel and image (idempotent; root)
	@bash scripts/setup.sh

check-venv:
	@test -x $(PY) || { echo "cvbench: $(PY) not found; run 'make setup' first" >&2; exit 2; }

bench: setup ## run SCENARIO across every available backend
	@$(PY) -m bench run $(SCENARIO) $(bench_flags)

charts: check-venv ## charts + report for RUN (default: results/latest)
	@$(PY) -m analysis charts $(or $(RUN),results/latest) --style $(STYLE)

compare: check-venv ## regression verdict: BASELINE against NEW (default results/latest)
	@test -n "$(BASELINE)" || { echo "cvbench: compare: BASELINE is not set; make compare BASELINE=results/baselines/<file-or-run>" >&2; exit 2; }
	@$(PY) -m analysis compare $(BASELINE) $(NEW)

ci-bench: setup ## fast startup+syscall pass, compared with results/baselines/<host-class>
	@$(PY) -m analysis ci-bench $(CI_ARGS)

baseline: setup ## record results/baselines/<host-class>.json: 3 fast startup+syscall runs
	@$(PY) -m analysis ci-bench --record 3 $(CI_ARGS)

history: check-venv ## METRIC across every run under results/ (BY=date|git)
	@$(PY) -m analysis history --metric $(METRIC) --by $(BY)

test: setup ## the full test suite (real containers and TCG guests)
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: check-venv ## ruff
	@$(PY) -m ruff check .

sweep: check-venv ## remove cvbench objects a killed run left behind
	@$(PY) -m bench sweep

clean: ## remove build artefacts (keeps .venv and results/)
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
