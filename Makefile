# attnviz — every target sets up .venv first when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help setup test test-fast mutations lint report lab demo-weights dist browser bench docs-images clean

help:
	@echo "make report        write reports/report.html for the bundled images (offline, demo models)"
	@echo "make test          set up .venv and run the whole test suite (notebooks and browser test too)"
	@echo "make mutations     break each claim on purpose and check that its test fails"
	@echo "make lab           open the notebooks in JupyterLab (127.0.0.1, with a token)"
	@echo "make dist          build the sdist and the wheel (from the sdist) into dist/"
	@echo "make demo-weights  retrain the bundled demo checkpoints (one CPU thread, about 2 h 20 min)"
	@echo "make bench         run the benchmarks"
	@echo "make docs-images   redraw docs/images/*.png, the README's pictures (needs chromium)"
	@echo "make lint          ruff"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the real-browser test (never `playwright install`).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser test will be skipped"; \
	else echo "warning: /usr/bin/chromium missing and apt-get unavailable; the browser test will be skipped"; fi

test: $(STAMP) browser
	$(BIN)/ruff check attnviz tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python tests/mutations.py

# each claim's test fails when the claim is broken on purpose (tests/CLAIMS.md)
mutations: $(STAMP)
	$(BIN)/python tests/mutations.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check attnviz tests benchmarks

report: $(STAMP)
	$(BIN)/attnviz report data/images --model demo-cbam --out reports/

lab: $(STAMP)
	$(BIN)/python -m attnviz.lab notebooks

demo-weights: $(STAMP)
	$(BIN)/python -m attnviz.train --demo all --out data/checkpoints

# offline: the build tools of .venv, no isolated build environment
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

docs-images: $(STAMP) browser
	$(BIN)/python docs/make_images.py

bench: $(STAMP)
	$(BIN)/python benchmarks/recorder_overhead.py
	$(BIN)/python benchmarks/attention_coverage.py
	$(BIN)/python benchmarks/widget_latency.py
	$(BIN)/python benchmarks/report_throughput.py
	$(BIN)/python benchmarks/report_throughput.py --model seresnet50 --n 64
	$(BIN)/python benchmarks/report_wall.py
	$(BIN)/python benchmarks/stats_throughput.py --model demo-se
	$(BIN)/python benchmarks/stats_distributed.py --procs 2
	$(BIN)/python benchmarks/stats_memory.py --n 20000 --per-image
	$(BIN)/python benchmarks/attribution_overhead.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/attention_queries.py
	$(BIN)/python benchmarks/training_logger.py
	$(BIN)/python benchmarks/image_decode.py

clean:
	rm -rf $(VENV) reports dist build .pytest_cache .ruff_cache
