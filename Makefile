# The two commands a new user types: `make report` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= orca

.PHONY: setup setup-dev report test lint wheel-check clean

# torch is installed first, pinned by constraints.txt: on a CPU-only machine with the local
# CPU wheel pip takes that; elsewhere PyPI's default build (CUDA on Linux) is what a GPU user gets.
# `make report` needs the core packages (and tokenizers, for full-scale training on a GPU); `make test`
# and `make lint` add the dev extras (pytest, ruff, the browser test's playwright, Ray, pyarrow) on top.
$(VENV)/.core: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bpe]"
	@touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

setup: $(VENV)/.core

setup-dev: $(VENV)/.dev

# GPU results committed under data/gpu/<study>/ are imported (again: importing is idempotent) so the
# report shows them beside this machine's.
# A failed measurement (run's exit status 1) still gets its report, which lists it; then make fails.
report: setup
	@status=0; $(BIN)/orca-analysis run $(STUDY) || status=$$?; \
	if [ $$status -ne 0 ] && [ $$status -ne 1 ]; then exit $$status; fi; \
	for f in $(wildcard data/gpu/$(STUDY)/*/results.csv); do $(BIN)/orca-analysis import "$$f" --study $(STUDY) || exit 1; done; \
	$(BIN)/orca-analysis report $(STUDY) || exit $$?; \
	if [ $$status -ne 0 ]; then echo "make report: some measurements failed (the report lists them); $(BIN)/orca-analysis run $(STUDY) --retry-failed reruns them" >&2; fi; \
	exit $$status

test: setup-dev
	$(BIN)/python -m pytest

# A non-editable install from the built wheel, used from another folder (scripts/wheel_check.sh).
wheel-check:
	PYTHON=$(PYTHON) bash scripts/wheel_check.sh

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) reports/*/ *.egg-info
