# The README's commands. Each target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo demo-prep test test-slow lint bench reproduce clean

$(STAMP): pyproject.toml packages/dataprep/pyproject.toml packages/trainer/pyproject.toml packages/evaluation/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt \
		-e "packages/dataprep[test]" \
		-e "packages/evaluation[hf,test]" \
		-e "packages/trainer[qlora,deepspeed,bench,test]" \
		-e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mft run pipelines/demo-cpu.yaml

# The prep stage alone on the hand-written sample files (every format, broken records included).
demo-prep: $(STAMP)
	$(VENV)/bin/mft-prep run packages/dataprep/src/mft_dataprep/sample_data/demo.yaml --output work/sample-prepared
	$(VENV)/bin/mft-prep stats work/sample-prepared

# Recompute the numbers of benchmarks/expected.json (the demo is skipped when unchanged) beside the published ones.
reproduce: $(STAMP)
	$(VENV)/bin/mft run pipelines/demo-cpu.yaml
	$(PY) benchmarks/reproduce.py --demo work/demo

bench: $(STAMP)
	$(PY) benchmarks/prep_speed.py
	$(PY) benchmarks/eval_speed.py --rounds 3
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/balancing_overhead.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) work
