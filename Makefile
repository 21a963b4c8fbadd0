# The two commands a newcomer needs: `make dev` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# What a team's instance runs (Datasette, Litestream), kept apart from the control plane as in the image.
INSTANCE_VENV := .venv-instance
INSTANCE_INSTALLED := $(INSTANCE_VENV)/.installed

.PHONY: dev test bench clean instance-venv chromium postgresql podman images

# $(call venv,DIR,REQUIREMENTS): create or update a virtualenv, then mark it installed.
define venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -r $(2)
	touch $(1)/.installed
endef

$(INSTALLED): requirements.txt requirements-dev.txt
	$(call venv,$(VENV),requirements-dev.txt)

$(INSTANCE_INSTALLED): instance/requirements.txt
	$(call venv,$(INSTANCE_VENV),instance/requirements.txt)

instance-venv: $(INSTANCE_INSTALLED)

## Run the whole control plane on this machine: local S3/STS, SQLite, admin user; prints where to log in.
dev: $(INSTALLED) $(INSTANCE_INSTALLED)
	$(BIN)/python manage.py dev

## The browser tests drive Debian's Chromium through Playwright (no browser download).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	test -x /usr/bin/chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

## The suite's PostgreSQL run starts a throwaway cluster of its own with Debian's server (tests/postgres.py).
postgresql:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql)

## podman (with runc and mmdebstrap: podman/build-images) builds and runs both images, as Chromium is installed.
podman:
	command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || \
	($(SUDO) apt-get update && $(SUDO) apt-get install -y podman buildah runc mmdebstrap uidmap)

## Build the control plane's image (localhost/cloudctl) and the teams' (localhost/cloudctl-instance).
images: podman
	podman/build-images

## Each pass spreads its test files over processes (pytest-xdist, a file's tests stay together in one): most of the
## suite waits on subprocesses, so more processes than cores shorten it. `make test SQLITE_WORKERS=` runs it in one.
SQLITE_WORKERS ?= -n 3 --dist loadfile
POSTGRES_WORKERS ?= -n 2 --dist loadfile

## Install, check the directions of imports between apps (.importlinter), and run the whole test suite twice at
## once, on SQLite and on PostgreSQL (much of each run waits on subprocesses); the PostgreSQL run's output goes to
## var/test-postgres.log, printed when both have ended. Fails if either fails.
# The image tests fail, not skip, when the images are missing.
test: export CLOUDCTL_REQUIRE_IMAGES = 1
test: $(INSTALLED) $(INSTANCE_INSTALLED) chromium postgresql images
	$(BIN)/lint-imports
	mkdir -p var
	CLOUDCTL_TEST_DATABASE=postgres $(BIN)/python -m pytest -p no:cacheprovider $(POSTGRES_WORKERS) >var/test-postgres.log 2>&1 & \
	postgres=$$!; \
	$(BIN)/python -m pytest $(SQLITE_WORKERS); sqlite=$$?; \
	wait $$postgres; postgres_status=$$?; \
	echo "=== the suite on PostgreSQL (var/test-postgres.log) ==="; cat var/test-postgres.log; \
	echo "make test: SQLite exit $$sqlite, PostgreSQL exit $$postgres_status"; \
	test $$sqlite = 0 && test $$postgres_status = 0

## Run every benchmark in bench/ (each ends with a `ratio:` line; bench/support/ holds what they share).
bench: $(INSTALLED) $(INSTANCE_INSTALLED)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(INSTANCE_VENV) var .pytest_cache .hypothesis .import_linter_cache
