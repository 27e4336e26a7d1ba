# The two commands the README leads with: `make run` and `make test`.
# Each is self-sufficient on a fresh Debian 12 machine with Python 3.11, as root.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup system-deps lint typecheck pytest soak bench clean compose-check

run: setup
	$(VENV)/bin/coffer up

test: setup lint typecheck pytest compose-check

setup: system-deps $(STAMP)

# Debian packages the project needs: Redis and PostgreSQL server binaries, and
# docker-compose to validate docker-compose.yml (no engine is needed for `config`).
system-deps:
	@PYTHON=$(PYTHON) bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -q -m "not soak"

soak: setup
	$(VENV)/bin/pytest -q -m soak

# Validates docker-compose.yml (no Docker engine needed); the secrets are placeholders.
compose-check: setup
	POSTGRES_PASSWORD=compose-check COFFER_SERVICE_TOKEN=compose-check \
		docker-compose -f docker-compose.yml config --quiet

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
