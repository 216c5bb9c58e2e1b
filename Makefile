# `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dbt]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m ruff check duckserve tests bench examples
	$(PY) -m mypy duckserve
	$(PY) tests/docker_host.py up
	$(PY) -m pytest -n 2 --dist loadgroup tests; status=$$?; $(PY) tests/docker_host.py down; exit $$status

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/front.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
