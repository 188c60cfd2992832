# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_DATA := data/synth-xray
DEMO_RUN := runs/demo

.PHONY: demo test lint install clean

$(BIN)/spinedx.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/spinedx.installed

demo: install
	test -f $(DEMO_DATA)/annotations.csv || $(BIN)/spinedx synth xray --out $(DEMO_DATA) --n 300 --seed 42
	$(BIN)/spinedx train configs/xray_lesions.yaml --out $(DEMO_RUN)
	$(BIN)/spinedx evaluate $(DEMO_RUN)
	@echo "report: $(abspath $(DEMO_RUN))/report.html"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
