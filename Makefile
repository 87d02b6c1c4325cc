# fastflow: the two commands of a fresh machine are `make demo` and `make test`; both create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EXTRAS ?= server,epics,test,torch

.PHONY: demo test test-slow bench env clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

env: $(STAMP)  ## create or update the environment in .venv

demo: $(STAMP)  ## the main job: an adaptive FAST scan of the bundled flakes phantom on the simulated instrument
	$(BIN)/fastflow scan --sample flakes --sampler fast --stop-coverage 0.2 --snapshots 0.05,0.1,0.15,0.2

test: $(STAMP)  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600

test-slow: $(STAMP)  ## the heavier cases as well
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=1800 -m "slow or not slow"

bench: $(STAMP)  ## benchmarks (print tables; not part of CI)
	$(BIN)/python benchmarks/recon.py

clean:
	rm -rf $(VENV) fastflow-runs
