# dfarun: `make run` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the builds this project is tested with (pip finds them on the
# project machines' disk; elsewhere they come from PyPI)
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
DATA_DIR ?=   # where the data sets live (torchvision layout); empty: dfarun's default
DATA := $(if $(strip $(DATA_DIR)),data_dir=$(strip $(DATA_DIR)))

STORE ?= runs
EXPERIMENTS := fig2-right fig2-frozen fig3 ifa-4x100 deep
TABLES := table1 table2 table3
# the tables are static pattern rules: make skips implicit (%) rules for a .PHONY target
.PHONY: help install test test-quick test-slurm run bench accelerator-prepare tables results figures clean $(TABLES) \
        $(addprefix quick-,$(TABLES)) $(EXPERIMENTS)

help:  ## list the targets
	@grep -E '^[a-z0-9% -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'
	@echo "  data and extra overrides: make run DATA_DIR=~/data ARGS='max_epochs=5'"

install: $(BIN)/.installed  ## create .venv and install dfarun (editable) with its test, cluster, tensorboard and tune extras

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test,cluster,tensorboard,tune]'
	touch $@

test: install  ## the layer contract and the test suite (synthetic data, CPU; 3 min 15 s on 2 idle cores)
	$(BIN)/lint-imports
	$(BIN)/pytest -q

# the rules against autograd, the schema's declarations, records, tables, docs: no training jobs
QUICK_TESTS := tests/test_rules.py tests/test_config_schema.py tests/test_records.py tests/test_tables.py \
               tests/test_report_honest.py tests/test_docs.py
test-quick: install  ## the layer contract and a fast subset of the tests (18 s on 2 idle cores)
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(QUICK_TESTS)

test-slurm: install  ## the tests through a real Slurm: a one-node cluster here (root; apt-get installs Slurm)
	scripts/slurm/test.sh $(BIN)/pytest -q

run: install  ## train 2x800 tanh with DFA on MNIST (the default experiment)
	$(BIN)/dfarun method=dfa model=2x800_tanh $(DATA) $(ARGS)

bench: install  ## 2x800 epochs and conv images/s next to the FLOP bound, idle beside busy (DFARUN_THREADS sets threads; ARGS=--estimate: hours per table)
	$(BIN)/python -m dfarun.cli.bench $(ARGS)

accelerator-prepare:  ## fill .accel/ for scripts/accelerator/run.sh: hydra wheels, MNIST from DATA_DIR (docs/accelerator.md)
	DATA_DIR='$(strip $(DATA_DIR))' scripts/accelerator/prepare.sh

table1 table2 table3: table%: install  ## sweep a paper table's grid (paper profile) into STORE (runs), render it into STORE/tables/
	$(BIN)/dfarun -m experiment=table$* store=$(STORE) $(DATA) $(ARGS)
	$(BIN)/dfarun-tables --store $(STORE) --out $(STORE)/tables --tables $* --compare

quick-table1 quick-table2 quick-table3: quick-table%: install  ## the same grid, quick profile (3 seeds, <= 20 epochs): a demo
	$(BIN)/dfarun -m experiment=table$* profile=quick store=$(STORE) $(DATA) $(ARGS)
	$(BIN)/dfarun-tables --store $(STORE) --out $(STORE)/tables --tables $* --compare

tables: install  ## render every table from the records in STORE (runs) into STORE/tables/
	$(BIN)/dfarun-tables --store $(STORE) --out $(STORE)/tables --compare

results: install  ## the committed Table 1 and the READMEs' headline, from results/records/ (writes results/)
	$(BIN)/dfarun-tables --store results/records --out results --tables 1 --compare --readme README.md \
	    --readme results/README.md

fig2-right fig2-frozen fig3 ifa-4x100 deep: install  ## run one figure's experiment (then: make figures)
	$(BIN)/dfarun -m experiment=$(subst -,_,$@) store=$(STORE) $(DATA) $(ARGS)

figures: install  ## render every figure whose records exist in STORE (runs) into STORE/figures/
	$(BIN)/dfarun-figures --store $(STORE) --out $(STORE)/figures $(if $(DATA),--data-dir $(DATA_DIR))

clean:  ## remove the virtual environment and caches (not runs/ or results/)
	rm -rf $(VENV) *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
