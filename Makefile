# Developer tasks. CI runs `make ci`, which is what the README's test command does.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: system-deps develop install install-dev lint test test-rust test-python \
	wheel-test bench bench-smoke ci serve

install:                 ## build the extension and install aiofast with its runtime deps
	$(PIP) install .

system-deps:             ## Debian packages the tests need (redis-server, taskset)
	./.ci/system-deps

install-dev:             ## editable install with every tool the tests need
	$(PIP) install -e '.[dev]'

develop:                 ## quick rebuild of the extension into the active virtualenv
	maturin develop --profile fastbuild -q

lint:                    ## formatting, clippy, ruff, mypy
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests benches examples
	$(PYTHON) -m mypy

test-rust:
	cargo test --workspace

test-python:
	$(PYTHON) -m pytest -q

wheel-test:              ## release wheel into a fresh venv, then import and use it
	./.ci/wheel-smoke

test: test-rust lint test-python wheel-test

bench:                   ## every side-by-side benchmark, full length
	$(PYTHON) benches/run_all.py

bench-smoke:             ## every benchmark for a few seconds, so none of them rots
	$(PYTHON) benches/run_all.py --smoke

ci: system-deps install-dev test bench-smoke

serve: install
	aiofast serve
