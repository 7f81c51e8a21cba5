# The two commands a newcomer needs: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
CONFIG ?= conf/citadel.yaml

.PHONY: run test lint typecheck check bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/citadel-proxy serve --config $(CONFIG)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check citadel_proxy tests bench
	$(BIN)/ruff format --check citadel_proxy tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

# Servers the end-to-end tests drive for real (nginx, promtool). Installed from Debian when missing.
# Each entry is command:debian-package; nothing is fetched when every command is already there.
SYSTEM_DEPS := nginx:nginx promtool:prometheus openssl:openssl systemd-analyze:systemd chromium:chromium

system-deps:
	@missing=; for dep in $(SYSTEM_DEPS); do \
		cmd=$${dep%%:*}; \
		command -v $$cmd >/dev/null 2>&1 || test -x /usr/sbin/$$cmd || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "system-deps: installing$$missing from Debian"; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -q"; \
		$$apt update </dev/null && $$apt install -y --no-install-recommends $$missing </dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
