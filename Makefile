# Two entry points for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint mosquitto chromium compose clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# One stamp per extra, redone when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-sim
	$(BIN)/iotfl demo

# The tests start their own mosquitto; install it where it is missing (needs root, as on CI).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; \
	  else echo "mosquitto is missing: sudo apt-get install -y mosquitto mosquitto-clients" >&2; exit 1; fi; }

# The dashboard's browser test drives Debian's chromium through playwright (it skips, saying so, without it).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing (the dashboard browser test will skip): sudo apt-get install -y chromium" >&2; fi; }

# deploy/docker-compose.yml is validated with `docker compose config` (or docker-compose v1); no engine is needed.
compose:
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; \
	  else echo "docker compose is missing (the compose test will skip): sudo apt-get install -y docker-compose" >&2; fi; }

test: $(VENV)/.installed-test mosquitto chromium compose
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check flcore device_sim gateway cloud iotfl tests benchmarks
	$(BIN)/ruff format --check flcore device_sim gateway cloud iotfl tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
