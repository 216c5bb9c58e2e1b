# `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean browser console

# dbt-duckserve/ is the dbt adapter (type: duckserve), a package of its own beside duckserve
$(STAMP): pyproject.toml dbt-duckserve/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dbt]' -e ./dbt-duckserve
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) browser
	$(PY) -m ruff check duckserve dbt-duckserve tests bench examples
	$(PY) -m mypy duckserve
	$(PY) tests/docker_host.py up
	$(PY) -m pytest -n 2 --dist loadgroup tests; status=$$?; $(PY) tests/docker_host.py down; exit $$status

# the web console's browser tests drive Debian's chromium: installed here when missing (as root,
# as on CI); elsewhere they skip and say how to enable them
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the console's browser tests will skip (fail on CI)"

# rebuild the web console's front end into duckserve/fronts/console/static (needs Node.js and npm;
# the output is committed, so users and CI need neither)
console:
	cd duckserve/fronts/console/web && npm ci --no-audit --no-fund && node build.mjs

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/front.py
	$(PY) bench/snowflake_server.py
	$(PY) bench/service_control.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts duckserve/fronts/console/web/node_modules
