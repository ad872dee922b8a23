# The two commands a new user types: `make report` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= orca

.PHONY: setup report test lint clean

# torch is installed first, pinned by constraints.txt: on a CPU-only machine with the local
# CPU wheel pip takes that; elsewhere PyPI's default build (CUDA on Linux) is what a GPU user gets.
$(BIN)/orca-analysis: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

setup: $(BIN)/orca-analysis

# GPU results committed under data/gpu/<study>/ are imported (again: importing is idempotent) so the
# report shows them beside this machine's.
report: setup
	$(BIN)/orca-analysis run $(STUDY)
	@for f in $(wildcard data/gpu/$(STUDY)/*/results.csv); do $(BIN)/orca-analysis import "$$f" --study $(STUDY) || exit 1; done
	$(BIN)/orca-analysis report $(STUDY)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) reports/*/ *.egg-info
