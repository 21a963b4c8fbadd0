# The two commands a newcomer needs: `make dev` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: dev test bench clean

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(INSTALLED)

## Run the whole control plane on this machine: local S3/STS, SQLite, admin user; prints where to log in.
dev: $(INSTALLED)
	$(BIN)/python manage.py dev

## Install and run the whole test suite.
test: $(INSTALLED)
	$(BIN)/python -m pytest

## Run every benchmark in bench/ (each ends with a `ratio:` line).
bench: $(INSTALLED)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
