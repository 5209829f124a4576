# Two commands do all set-up on a fresh Debian machine as root: `make demo`, `make test`.
#
# The virtual environment is built from Debian's /usr/bin/python3 in a directory
# every local user can read (user endpoints run as unprivileged accounts and must
# be able to exec its interpreter), never under /root where a clone may live.
# `.venv` in the checkout is a symlink to it. The project is installed into it as
# a regular (non-editable) package so its code is readable by those accounts too.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV_ROOT ?= /var/tmp/compute-agent
VENV ?= $(VENV_ROOT)/venv-$(shell printf '%s' "$(CURDIR)" | md5sum | cut -c1-10)
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The official globus-compute-endpoint 4.19, in its own venv, for the test that
# runs it against our service (tests/e2e/test_official_endpoint.py).
OFFICIAL_VENV ?= $(VENV_ROOT)/official-endpoint-4.19
OFFICIAL_ENDPOINT := $(OFFICIAL_VENV)/bin/globus-compute-endpoint
# globus-action-provider-tools, which checks the Flows action provider's documents
# in tests; it pins globus-sdk<4 and pydantic<2, so it cannot share the venv above.
AP_TOOLS_VENV ?= $(VENV_ROOT)/action-provider-tools-0.21
AP_TOOLS_PYTHON := $(AP_TOOLS_VENV)/bin/python

.PHONY: all venv install services slurm chromium official-endpoint action-provider-tools test lint demo soak compare rpm clean

all: test

$(VENV)/.deps-stamp: pyproject.toml
	@packaging/dev/ensure-python-venv.sh "$(PYTHON)"
	install -d -m 0755 "$(VENV_ROOT)"
	[ -x "$(BIN)/python" ] || $(PYTHON) -m venv "$(VENV)"
	chmod 0755 "$(VENV)"
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q ".[test]"
	touch "$@"

venv: $(VENV)/.deps-stamp
	ln -sfn "$(VENV)" .venv

# Reinstall the project itself (no dependency resolution) so the copy the
# privilege-dropped user endpoints import matches this checkout.
install: venv
	$(BIN)/pip install -q --no-deps --no-build-isolation --force-reinstall .
	chmod -R a+rX "$(VENV)"

$(OFFICIAL_ENDPOINT):
	@packaging/dev/ensure-python-venv.sh "$(PYTHON)"
	install -d -m 0755 "$(VENV_ROOT)"
	[ -x "$(OFFICIAL_VENV)/bin/python" ] || $(PYTHON) -m venv "$(OFFICIAL_VENV)"
	$(OFFICIAL_VENV)/bin/pip install -q "globus-compute-endpoint==4.19.*"
	chmod -R a+rX "$(OFFICIAL_VENV)"

official-endpoint: $(OFFICIAL_ENDPOINT)

$(AP_TOOLS_VENV)/.stamp:
	@packaging/dev/ensure-python-venv.sh "$(PYTHON)"
	install -d -m 0755 "$(VENV_ROOT)"
	[ -x "$(AP_TOOLS_PYTHON)" ] || $(PYTHON) -m venv "$(AP_TOOLS_VENV)"
	$(AP_TOOLS_VENV)/bin/pip install -q "globus-action-provider-tools==0.21.*"
	touch "$@"

action-provider-tools: $(AP_TOOLS_VENV)/.stamp

services:
	@packaging/dev/ensure-rabbitmq.sh
	@packaging/dev/ensure-postgres.sh
	@packaging/dev/ensure-manager-account.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A single-node Slurm cluster for the tests whose workers run in Slurm jobs.
slurm:
	@packaging/dev/ensure-slurm.sh

# Debian's Chromium, driven headless by the web app's browser tests (never a download).
chromium:
	@packaging/dev/ensure-chromium.sh

test: install services slurm official-endpoint chromium action-provider-tools lint
	COMPUTE_AGENT_OFFICIAL_ENDPOINT="$(OFFICIAL_ENDPOINT)" COMPUTE_AGENT_AP_TOOLS_PYTHON="$(AP_TOOLS_PYTHON)" \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# KEEP=1 leaves the service (and its web app) running on the demo's data.
KEEP ?=
demo: install services
	$(BIN)/python -m bench.demo $(if $(KEEP),--keep)

# Our manager beside the official globus-compute-endpoint 4.19 on our service (not
# part of `make test`; about 15 minutes a run): writes bench/results/compare.{json,png}.
RUNS ?= 3
compare: install services official-endpoint
	$(BIN)/pip install -q ".[bench]"
	COMPUTE_AGENT_OFFICIAL_ENDPOINT="$(OFFICIAL_ENDPOINT)" $(BIN)/python -m bench.compare --runs $(RUNS)

# Several minutes of load on one manager (not part of `make test`): 50 identities
# at once, then CYCLES user endpoint start/stop cycles with the manager's memory,
# descriptors and cgroups measured; writes bench/results/soak.json.
CYCLES ?= 1000
soak: install services
	$(BIN)/python -m bench.soak --cycles $(CYCLES)

# The RPM builds its own venv from /usr/bin/python3; it needs no development venv.
rpm:
	packaging/rpm/build.sh

clean:
	rm -rf .venv build dist *.egg-info "$(VENV)"
