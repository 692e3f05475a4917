# dfarun: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the builds this project is tested with (pip finds them on the
# project machines' disk; elsewhere they come from PyPI)
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

STORE ?= runs
.PHONY: help install test run bench tables clean table1 table2 table3 quick-table1 quick-table2 quick-table3

help:  ## list the targets
	@grep -E '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  extra dfarun overrides: make run ARGS='max_epochs=5 data_dir=../shared/data/mnist'"

install: $(BIN)/.installed  ## create .venv and install dfarun (editable) with its test extras

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: install  ## run the test suite (synthetic data, CPU, a few minutes)
	$(BIN)/pytest -q

run: install  ## train 2x800 tanh with DFA on MNIST (the default experiment)
	$(BIN)/dfarun method=dfa model=2x800_tanh $(ARGS)

bench: install  ## seconds per MNIST-sized epoch next to the FLOP bound
	$(BIN)/python -m dfarun.bench $(ARGS)

table%: install  ## table1|table2|table3: sweep a paper table's grid (paper profile), then render it
	$(BIN)/dfarun -m experiment=table$* store=$(STORE) $(ARGS)
	$(BIN)/dfarun-tables --store $(STORE) --out results --tables $* --compare

quick-table%: install  ## quick-table1|2|3: the same grid, quick profile (3 seeds, <= 20 epochs)
	$(BIN)/dfarun -m experiment=table$* profile=quick store=$(STORE) $(ARGS)
	$(BIN)/dfarun-tables --store $(STORE) --out results --tables $* --compare

tables: install  ## render every table from the records in $(STORE) into results/
	$(BIN)/dfarun-tables --store $(STORE) --out results --compare

clean:  ## remove the virtual environment and caches (not runs/ or results/)
	rm -rf $(VENV) *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
