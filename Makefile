.PHONY: install test quickstart lint bench clean

install:        ## create .venv with lakeflow and the test extras
	python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -e ".[dev]"

test:           ## run the test suite (what .ci/run runs)
	.venv/bin/pytest

quickstart:     ## materialize the example pipeline into ./lake on an embedded Ray
	.venv/bin/lakeflow materialize pipelines/flights.py

lint:           ## ruff and mypy
	.venv/bin/ruff check lakeflow tests benchmarks pipelines && .venv/bin/mypy lakeflow

bench:          ## the benchmark suite, full size, appending to benchmarks/RESULTS.md
	.venv/bin/python benchmarks/bench_pipeline.py --days 365

clean:          ## remove the local lake and caches
	rm -rf lake .pytest_cache .ruff_cache .mypy_cache
