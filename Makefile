# specmill: `make run` starts the platform, `make test` runs the whole suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install sandbox-deps redis-server chromium bench-sandbox demo chaos bench-gateway bench-kb bench-generate bench-fairness bench-console eval eval-pools eval-choose eval-defaults bench-provenance clean-data lint

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need Python 3.11 ($(PY))"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP) sandbox-deps

# The sandbox needs libseccomp and a Python 3.11 that its unprivileged uids can read (a pyenv under
# /root is closed to them). As root, Debian's packages are installed when missing; otherwise make
# stops with the command to run.
apt_install = { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "installing Debian's $(1) for the sandbox" \
	&& { apt-get install -y -qq $(1) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; }; }; } \
	|| { echo "the sandbox needs Debian's $(1): run  sudo apt-get install -y $(1)"; exit 1; }

# The console's browser tests drive Debian's chromium (Playwright's own download cannot be reached). As
# root it is installed when missing; otherwise those tests skip, saying which command installs it.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& echo "installing Debian's chromium for the console's browser tests" \
		&& { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } \
		|| echo "no chromium: the console's browser tests will skip (sudo apt-get install -y chromium)"

# The rate-limit tests run two gateways against a real Redis.
redis-server:
	@command -v redis-server >/dev/null || $(call apt_install,redis-server)

sandbox-deps: $(STAMP)
	@ldconfig -p | grep -q 'libseccomp\.so\.2' || $(call apt_install,libseccomp2)
	@$(BIN)/python -c "from sandbox.layout import python; python()" 2>/dev/null || $(call apt_install,python3.11)
	@$(BIN)/python -c "from sandbox import isolation; print('sandbox:', isolation())" || { \
		echo "the sandbox cannot run here: debugging will fail every project with this reason"; exit 1; }

run: install
	$(BIN)/specmill run

demo: install
	$(BIN)/specmill demo $(DEMO_ARGS)

chaos: install
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

# Formatting, lint, the import contracts between the layers and the types (pyproject.toml: [tool.ruff],
# [tool.importlinter], [tool.pyright]).
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright

test: lint install redis-server chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-gateway: install
	$(BIN)/python bench/gateway.py

bench-kb: install
	$(BIN)/python bench/kb.py $(BENCH_ARGS)

bench-sandbox: install
	$(BIN)/python bench/sandbox.py $(BENCH_ARGS)

bench-console: install
	$(BIN)/python bench/console.py $(BENCH_ARGS)

bench-fairness: install
	$(BIN)/python bench/fairness.py $(BENCH_ARGS)

# llama.cpp, for bench-generate only. Its native build turns on AMX on this CPU family, and that path
# crashes in this VM (the kernel does not grant AMX tiles), so it is built for AVX-512 with VNNI and BF16.
LLAMA_CPP_PYTHON ?= llama-cpp-python==0.3.36
LLAMA_CPP_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON

bench-generate: install
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || { echo "building $(LLAMA_CPP_PYTHON) (several minutes)"; \
		CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(BIN)/pip install --quiet $(LLAMA_CPP_PYTHON); }
	$(BIN)/python bench/generate.py $(BENCH_ARGS)

eval: install
	$(BIN)/python bench/eval.py $(EVAL_ARGS)

# candidate pools (greedy + 10 samples per problem), generated once and cached under docs/eval/pools
eval-pools: install
	$(BIN)/python bench/pools.py $(EVAL_ARGS)

# the selectors on those pools (tree_transformers against the baselines): docs/eval/selectors-*.json
eval-choose: install
	$(BIN)/python bench/choose.py $(EVAL_ARGS)

# a new tenant's default generation settings: problems solved per minute on MBPP validation (EVAL_ARGS="--mbpp PATH")
eval-defaults: install
	$(BIN)/python bench/defaults.py $(EVAL_ARGS)

# multi_head_attention: the estimate's head weights fitted on MBPP train, then every method's faithfulness on
# HumanEval against leave-one-out (EVAL_ARGS="--mbpp PATH")
bench-provenance: install
	$(BIN)/python bench/provenance.py fit $(EVAL_ARGS)
	$(BIN)/python bench/provenance.py eval $(EVAL_ARGS)

clean-data:
	rm -rf .specmill
