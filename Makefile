# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Each creates and fills its own virtual environment in .venv (CPU torch 2.13.0).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
MODEL ?= hisem
# `make demo MODEL=semantic_cc` trains configs/semantic_cc_synthcc_cpu.yaml (from its stand-ins, built and cached
# the first time) into its own folder; `make demo MODEL=cd` the change detector (configs/change_detection_synthcc_cpu.yaml)
DEMO_OUT ?= $(if $(filter hisem,$(MODEL)),demo_out,demo_out_$(MODEL))
DEMO_CONFIG ?= configs/$(if $(filter cd,$(MODEL)),change_detection,$(MODEL))_synthcc_cpu.yaml

.PHONY: demo test lint bench docs env clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,geo,serve,onnx,docs]"
	touch $@

env: $(VENV)/.installed

test: env
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -n 2 tests

lint: env
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports

demo: env
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) scripts/demo.py --out $(DEMO_OUT) --config $(DEMO_CONFIG)

# the documentation site, strictly (a broken link or reference fails), into site/; open site/index.html
docs: env
	HF_HUB_OFFLINE=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: env
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_out demo_out_* site .pytest_cache .ruff_cache
