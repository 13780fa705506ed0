# The README's commands. Each target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow lint bench reproduce clean

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
	$(VENV)/bin/mft-prep run packages/dataprep/src/mft_dataprep/sample_data/demo.yaml --output work/demo/prepared
	$(VENV)/bin/mft-prep stats work/demo/prepared

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) work
