# The two commands a newcomer needs: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# constraints.txt picks the CPU build of torch, so nothing pulls the CUDA build
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/schedgym quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The job-shop speed comparison runs JSSEnv and job-shop-lib side by side; JSSEnv's own
# requirements pull rendering packages it does not need, hence --no-deps.
bench: $(STAMP)
	$(BIN)/pip install --quiet "plotly>=5" && $(BIN)/pip install --quiet --no-deps "jssenv==1.1.0"
	$(BIN)/schedgym bench

clean:
	rm -rf $(VENV) build *.egg-info
