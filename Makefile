# make run: set up .venv if needed and serve on http://127.0.0.1:8000 (Swagger UI at /docs).
# make test: set up or update .venv, then ruff, mypy and pytest.
# make bench: naive recipe vs ckpt-compat (BENCH_ARGS=--big adds the 13.5 GB Llama scenario),
# the catalogue index, the fleet (Celery vs the local pool: overhead and throughput), and a
# report of the 1.2 GB checkpoints held in an S3 server (moto) vs on local disk (bytes read).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ckpt-compat serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check app ckpt_compat_client tests benchmarks
	$(BIN)/ruff format --check app ckpt_compat_client tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.catalog_index
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.s3_report

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
