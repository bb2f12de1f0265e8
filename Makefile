# The two set-up commands of the README: `make run` (the lesson end to end) and `make test`.
# Each does all of its own set-up on a fresh machine: Python packages, cluster binaries, Docker.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# nbgrader calls alembic (and jupyter) through PATH: the venv's scripts must come first.
export PATH := $(BIN):$(PATH)

.PHONY: run check test test-fast install binaries test-binaries cluster docker kind-image hosted-image chromium node clean-cluster

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebook,classroom]'
	touch $@

binaries: install
	$(BIN)/python -m autograder binaries practice

# The suite runs the lesson on both lab clusters: obtain what each of them runs
# (tests/test_setup.py checks this list against the providers' own requirements).
test-binaries: install
	$(BIN)/python -m autograder binaries practice kind

cluster: binaries
	$(BIN)/python -m autograder cluster up --provider practice

docker:
	.ci/docker-engine start

# The kind node image is built offline from local parts; cached until its inputs change.
kind-image: test-binaries docker
	command -v gcc >/dev/null || (apt-get update -qq && apt-get install -y -qq gcc libc6-dev)
	$(BIN)/python -m autograder kind-image build

# The hosted JupyterLab image (binder/Dockerfile), with this machine's cached cluster binaries
# in its build context so Kubernetes is not built twice; Docker's layer cache makes reruns quick.
hosted-image: test-binaries docker
	$(BIN)/python -m autograder hosted-image build

run: cluster
	$(BIN)/python -m autograder demo --provider practice
	$(BIN)/python -m autograder notebooks run --provider practice
	$(BIN)/python -m autograder grade lesson01 --masters --provider practice

# The browser tests drive JupyterLab in Debian's Chromium through Playwright (installed with the test extras);
# Playwright's own browser download cannot work on these machines.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# The classroom's JupyterHub needs configurable-http-proxy, which `classroom up` installs with npm.
node:
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)

# The style, read by tools: format and lint (pyproject's [tool.ruff]), types (pyproject's [tool.mypy]).
check: install
	$(BIN)/ruff format --check autograder tests
	$(BIN)/ruff check autograder tests
	$(BIN)/mypy

# The fast tier: no cluster, no Docker, no root, no network (pyproject's addopts; tests/tiers.py).
test-fast: install
	$(BIN)/python -m pytest -ra --durations=10

# The whole suite: `-m ""` lifts the fast tier's selection. It runs on pytest-xdist workers, each
# with a lab of its own (tests/workers.py); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 3
test: test-binaries docker kind-image hosted-image chromium node
	$(BIN)/python -m pytest -m "" -n $(TEST_WORKERS) --dist loadgroup -ra --durations=50

clean-cluster: install
	$(BIN)/python -m autograder cluster down
