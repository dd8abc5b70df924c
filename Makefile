# cdc-projector: developer entry points. Everything a fresh machine needs is installed by
# these targets (pip here; apt, Maven Central and go builds inside `stack-up`).
PYTHON ?= python3
# three workers, one test file per worker at a time: integration tests mostly wait on
# catch-up, and each isolates itself (own database, slot, topics, collections, ports)
PYTEST_ARGS ?= -n 3 --dist loadfile -m 'not quarantine'

.PHONY: setup stack-up stack-down stack-status test test-quarantine demo

## install the package with its dev and chDB extras (editable)
setup:
	$(PYTHON) -m pip install -q -e '.[dev,chdb]'
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)  # dashboard browser test (never `playwright install`)

## install what is missing and start PostgreSQL, Kafka, Kafka Connect (Debezium), FerretDB
stack-up:
	$(PYTHON) -m cdc_projector.devstack up

## stop the local stack (drops every replication slot of its Postgres first)
stack-down:
	$(PYTHON) -m cdc_projector.devstack down

stack-status:
	$(PYTHON) -m cdc_projector.devstack status

## the whole suite (unit + integration) against the real local stack
test: setup stack-up
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

## the acceptance tests that do not pass reliably yet (see the quarantine marker in setup.cfg)
test-quarantine: setup stack-up
	$(PYTHON) -m pytest -q -m quarantine

## quickstart: sample database, live workload, projections, dashboard (command: cdc-projector demo)
DEMO_SERVICES ?= postgres ferretdb
demo: setup
	$(PYTHON) -m cdc_projector.devstack up $(DEMO_SERVICES)
	cdc-projector demo
