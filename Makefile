# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_MRI := data/synth-mri
DEMO_ANALYSIS := runs/demo-analysis
DEMO_STUDY := data/synth-study-1
DEMO_DATA := data/synth-xray
DEMO_RUN := runs/demo

.PHONY: demo test lint install system-tools clean viewer

$(BIN)/spinedx.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/spinedx.installed

# System packages the tests drive for real: dcmtk (dsrdump parses our SR), Orthanc with its DICOMweb
# plugin (the PACS bridge), Chromium (the viewer's browser tests) and PostgreSQL (the review store).
# Installed when we may (root with apt); otherwise the tests that need them skip.
SYSTEM_PACKAGES := dcmtk orthanc orthanc-dicomweb chromium postgresql
SYSTEM_FILES := /usr/bin/dsrdump /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/bin/chromium /usr/bin/pg_ctlcluster
system-tools:
	@missing=0; for f in $(SYSTEM_FILES); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
		else echo "note: some of $(SYSTEM_PACKAGES) missing; the tests that need them will skip"; fi; \
	fi

demo: install
	test -f $(DEMO_MRI)/series.csv || $(BIN)/spinedx synth mri --out $(DEMO_MRI) --patients 2 --seed 7
	$(BIN)/spinedx analyze $(DEMO_MRI)/images/*.png --task mri-discs --out $(DEMO_ANALYSIS)
	mkdir -p $(DEMO_STUDY) && cp $(DEMO_MRI)/images/1_t1.png $(DEMO_STUDY)/t1.png && cp $(DEMO_MRI)/images/1_t2.png $(DEMO_STUDY)/t2.png
	$(BIN)/spinedx analyze $(DEMO_STUDY) --task mri-discs --out $(DEMO_ANALYSIS)
	@echo "MRI slice reports: $(abspath $(DEMO_ANALYSIS))/*/report.html"
	@echo "MRI study report (both series fused per level): $(abspath $(DEMO_ANALYSIS))/synth-study-1/report.html"
	test -f $(DEMO_DATA)/annotations.csv || $(BIN)/spinedx synth xray --out $(DEMO_DATA) --n 300 --seed 42
	$(BIN)/spinedx train configs/xray_lesions.yaml --out $(DEMO_RUN)
	$(BIN)/spinedx evaluate $(DEMO_RUN)
	@echo "MRI study report: $(abspath $(DEMO_ANALYSIS))/synth-study-1/report.html"
	@echo "radiograph classifier report: $(abspath $(DEMO_RUN))/report.html"

lint: install
	$(BIN)/ruff check src tests benchmarks docs/generate_reference.py
	$(BIN)/ruff format --check src tests benchmarks docs/generate_reference.py

test: lint system-tools
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The review viewer (web/, Cornerstone3D) bundled into src/spinedx/serve/static, which is committed:
# only needed after changing web/.
viewer:
	cd web && npm ci && npm run build

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA) $(DEMO_ANALYSIS) $(DEMO_MRI)
