# The README's commands. Each target creates .venv and installs what it needs when missing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo demo-prep test test-slow lint bench reproduce clean experiment

$(STAMP): pyproject.toml packages/cli/pyproject.toml packages/dataprep/pyproject.toml packages/trainer/pyproject.toml packages/evaluation/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt \
		-e packages/cli \
		-e "packages/dataprep[test]" \
		-e "packages/evaluation[hf,test]" \
		-e "packages/trainer[qlora,deepspeed,bench,test]" \
		-e ".[dev]"
	touch $(STAMP)

# Debian packages the tests need: bubblewrap (mft-eval's sandbox confines programs with it; without it the sandbox
# runs unconfined and says so, and the tests fail under CI=true), and HumanEval-X's toolchains and offline
# dependencies: g++, libssl-dev (CPP/162) and libboost-dev (CPP/22 and CPP/137 include boost/any.hpp), a JDK,
# node, Go with testify, cargo and the Rust crates rand, regex (with aho-corasick and memchr, its default features)
# and md5 as Debian ships their sources. Each entry of
# SYSTEM_CHECKS is what a package provides (a command, or a path); apt-get runs, as root, only for those missing.
SYSTEM_PACKAGES := bubblewrap g++ libssl-dev libboost-dev default-jdk-headless nodejs golang-go \
	golang-github-stretchr-testify-dev cargo librust-rand-dev librust-regex-dev librust-aho-corasick-dev \
	librust-memchr-dev librust-md5-dev
SYSTEM_CHECKS := bwrap:bubblewrap g++:g++ /usr/include/openssl/md5.h:libssl-dev /usr/include/boost/any.hpp:libboost-dev \
	javac:default-jdk-headless \
	node:nodejs go:golang-go /usr/share/gocode/src/github.com/stretchr/testify:golang-github-stretchr-testify-dev \
	cargo:cargo '/usr/share/cargo/registry/rand-0.8*:librust-rand-dev' \
	'/usr/share/cargo/registry/regex-1*:librust-regex-dev' \
	'/usr/share/cargo/registry/aho-corasick-*:librust-aho-corasick-dev' \
	'/usr/share/cargo/registry/memchr-*:librust-memchr-dev' '/usr/share/cargo/registry/md5-*:librust-md5-dev'

system-deps:
	@missing=""; for check in $(SYSTEM_CHECKS); do what="$${check%%:*}"; pkg="$${check##*:}"; \
	  case "$$what" in /*) ls -d $$what >/dev/null 2>&1 || missing="$$missing $$pkg";; \
	    *) command -v "$$what" >/dev/null 2>&1 || missing="$$missing $$pkg";; esac; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "system-deps: apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "mft: Debian packages missing:$$missing (bubblewrap: mft-eval's sandbox; the others: HumanEval-X)" >&2; fi; fi

install: system-deps $(STAMP)

demo: system-deps $(STAMP)
	$(VENV)/bin/mft run pipelines/demo-cpu.yaml

# SFT-single, SFT-mixed and MFT with each balancing, 3 seeds (pipelines/experiment-cpu.yaml): results.json, a
# Markdown table and one PNG per task under work/experiment/collect/.
experiment: system-deps $(STAMP)
	$(VENV)/bin/mft run pipelines/experiment-cpu.yaml

# The prep stage alone on the hand-written sample files (every format, broken records included).
demo-prep: $(STAMP)
	$(VENV)/bin/mft-prep run packages/dataprep/src/mft_dataprep/sample_data/demo.yaml --output work/sample-prepared
	$(VENV)/bin/mft-prep stats work/sample-prepared

# Recompute the numbers of benchmarks/expected.json (the demo is skipped when unchanged) beside the published ones.
reproduce: system-deps $(STAMP)
	$(VENV)/bin/mft run pipelines/demo-cpu.yaml
	$(PY) benchmarks/reproduce.py --demo work/demo

bench: system-deps $(STAMP)
	$(PY) benchmarks/prep_speed.py
	$(PY) benchmarks/eval_speed.py --rounds 3
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/balancing_overhead.py

test: system-deps $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: system-deps $(STAMP)
	$(PY) -m pytest -m slow --durations=15 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) work
