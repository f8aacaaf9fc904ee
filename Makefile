# The two commands a new user needs (see README.md):
#   make serve   install what is missing into .venv/, then serve the demo index on localhost:50051
#   make test    install what is missing into .venv/, then run the whole test suite
# Everything installs into .venv/ in the project root. torch goes first, alone, so that pip
# takes the local CPU build and never resolves the CUDA one.

PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: serve test lint install proto bench clean-venv

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/sleuth serve $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

proto: $(STAMP)
	$(VENV)/bin/python -m scripts.gen_proto

bench: $(STAMP)
	$(VENV)/bin/python -m scripts.bench_search

clean-venv:
	rm -rf $(VENV)
