# The two commands: `make demo` and `make test`. Both set the machine up first (venv, Python
# dependencies, Debian's mosquitto / influxdb / victoria-metrics) — see deploy/dev-setup.sh.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup demo test bench lint fmt clean

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/dev-setup.sh
	bash deploy/dev-setup.sh
	@touch $(STAMP)

demo: setup
	$(PY) -m gateway.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) tests/bench/run_bench.py
	$(PY) tests/bench/rfid_bench.py
	$(PY) tests/bench/footfall_api_bench.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf .venv .pytest_cache .ruff_cache .demo
