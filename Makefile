# Two commands matter: `make demo` (the agent, offline) and `make test` (everything, from nothing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Defined before any rule names it: make expands a rule's prerequisites when it reads the rule.
SECURITY_VENV := .venv-security
SECURITY_STAMP := $(SECURITY_VENV)/.installed
# Puts the Lambda runtime's Python (3.12) on PATH where pyenv has it; the layer's own build needs no 3.12.
export PYENV_VERSION ?= $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.11' | head -1):$(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.12' | head -1)

.PHONY: venv demo test unit lint lint-security format validate build deploy clean bench bench-smoke browser console-screenshot soak reliability-report

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The embedded model's runtime: llama-cpp-python compiles llama.cpp on its first install. The build's
# progress lines are shown; the whole log is kept for when it fails.
LOCAL_STAMP := $(VENV)/.installed-local
$(LOCAL_STAMP): $(STAMP)
	@echo "Installing the local model runtime (.[dev,local]). On a first run llama-cpp-python builds"
	@echo "llama.cpp from source: about 6 minutes on 2 cores. Full log: $(VENV)/local-install.log"
	@set -o pipefail; $(BIN)/python -m pip install -v -e '.[dev,local]' 2>&1 | tee $(VENV)/local-install.log \
		| awk '/\[ *[0-9]+%\]|Building wheel|Successfully (built|installed)|ERROR/ { print "  " $$0; fflush() }' \
		|| { echo "Installing .[dev,local] failed. The end of $(VENV)/local-install.log:"; \
		     tail -n 40 $(VENV)/local-install.log; exit 1; }
	@touch $@

demo: $(LOCAL_STAMP)
	$(BIN)/twelvefactor demo $(ARGS)

# The whole suite, the embedded model's e2e and eval runs included, hence the local extra; the security
# lint (checkov) runs in it as tests/integration/test_security_lint.py, the console's tests in a browser.
test: $(LOCAL_STAMP) $(SECURITY_STAMP) lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The console's tests drive a real browser: Debian's chromium and its chromedriver, installed here
# where missing (as root, with apt-get), or a clear stop saying what to install.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing chromium and chromium-driver (Debian packages) for the console's browser tests..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| { echo "apt-get could not install chromium and chromium-driver: install them, then run make test again"; exit 1; }; \
	else \
		echo "The console's browser tests need chromium and chromedriver on PATH. On Debian or Ubuntu, as root:"; \
		echo "  apt-get install chromium chromium-driver"; \
		exit 1; \
	fi

# Retakes the README's console screenshot (docs/images/console-thread.png) from the browser test.
console-screenshot: venv browser
	UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest tests/e2e/test_console.py -k approve $(PYTEST_ARGS)

# The seeded soak (tests/soak): THREADS threads through random schedules with faults at every port,
# checked against five invariants; then the Hypothesis suites under the random profile (make test
# runs them derandomized). A failing run prints its seed: `make soak SEED=<seed>` replays it.
# The figures land in .cache/soak/results.json; `make reliability-report` puts them in docs/.
# FAULT_RATE is the share of port calls that fail; BUDGET=<seconds> stops starting threads after that.
THREADS ?= 500
FAULT_RATE ?= 0.25
soak: venv
	SOAK_THREADS=$(THREADS) SOAK_RATE=$(FAULT_RATE) $(if $(SEED),SOAK_SEED=$(SEED)) $(if $(BUDGET),SOAK_BUDGET_SECONDS=$(BUDGET)) $(BIN)/python -m pytest tests/soak -s -q $(PYTEST_ARGS)
	HYPOTHESIS_PROFILE=random $(BIN)/python -m pytest -q tests/reliability/test_hostile_fuzz.py tests/reliability/test_openapi.py tests/unit/test_context.py tests/unit/test_hypothesis_profile.py

# docs/reliability.md from the last saved results of tests/reliability (and of `make soak`); no test
# run writes a tracked file.
reliability-report: venv
	$(BIN)/python -m tests.reliability.report

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The security lint: checkov over the CloudFormation `sam deploy` creates, every accepted finding listed
# with its reason in checkov-suppressions.yaml. checkov lives in its own venv because it pins boto3 and
# botocore older than those the application is tested with; its version is pyproject's `security` extra.
$(SECURITY_STAMP): pyproject.toml | $(STAMP)
	@test -x $(SECURITY_VENV)/bin/python || $(BIN)/python -m venv $(SECURITY_VENV)
	$(SECURITY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SECURITY_VENV)/bin/python -m pip install --quiet $$($(BIN)/python -c "import tomllib; \
		print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['security']))")
	@touch $@

lint-security: $(SECURITY_STAMP)
	$(BIN)/python -m pytest tests/integration/test_security_lint.py $(PYTEST_ARGS)

# Deploy-side targets: `sam validate --lint` and `sam build` work offline (tests run both too).
ARCH ?= x86_64
validate: venv
	SAM_CLI_TELEMETRY=0 $(BIN)/sam validate --lint

# XRAY=1 builds the layer with the X-Ray SDK, for subsegments from inside the handlers (docs/deploying.md).
build: venv
	SAM_CLI_TELEMETRY=0 ARCHITECTURE=$(ARCH) LAYER_EXTRAS=$(if $(filter 1 true yes,$(XRAY)),xray) \
		$(BIN)/sam build --parameter-overrides Architecture=$(ARCH)

# Deploys what `make build` built. Every function publishes on the built layer's hash (LayerCodeSha256),
# appended here to the environment's own overrides from samconfig.toml: a layer-only change then still
# moves the live aliases. ENV is a samconfig.toml environment: default, dev or prod.
ENV ?= default
deploy: build
	SAM_CLI_TELEMETRY=0 $(BIN)/sam deploy --config-env $(ENV) \
		--parameter-overrides "$$($(BIN)/python -m twelvefactor.local.deploy --config-env $(ENV)) Architecture=$(ARCH)"

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks against LangGraph (docs/benchmarks.md). The peer's stack and the measuring tools live in
# their own venv, never in the product's; `bench-smoke` (also run by `make test`, through
# tests/bench) runs every figure once on tiny sizes so the harness cannot rot.
BENCH_VENV := bench/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed
$(BENCH_STAMP): bench/requirements-peer.txt bench/requirements-tools.txt | $(STAMP)
	@test -x $(BENCH_VENV)/bin/python || $(BIN)/python -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements-peer.txt -r bench/requirements-tools.txt
	@touch $@

bench: $(LOCAL_STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(ARGS)

bench-smoke: venv
	$(BIN)/python -m bench.run --smoke --out .cache/benchmarks-smoke.md $(ARGS)

clean:
	rm -rf $(VENV) $(SECURITY_VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache
