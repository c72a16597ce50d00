# Two entry points (see README): `make lab` runs the course, `make test` runs the tests.
# Both need only Python 3.10+, make and the package registries.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Tests never touch the network: open_clip/huggingface stay offline, profile is `quick`.
# Tests run on CPU even where a GPU exists (as open_clip's tests do): CUDA_VISIBLE_DEVICES is empty.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OBSTRUCT_PROFILE=quick MPLBACKEND=Agg PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES=
# Two pytest workers of one thread each (pytest-xdist; a notebook's cells stay together on one worker,
# as nbval needs): on 2 cores that beats one two-thread process on the tiny models, and never runs
# 2 x 2 threads on 2 cores. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
TEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)
TEST_THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_ARGS ?=
LINT_PATHS := obstructlib tests benchmarks notebooks conftest.py

.PHONY: lab test test-fast lint venv install-notebook install-dev clean help

help:
	@echo "make lab       - create $(VENV), install obstructlib with notebook extras, start JupyterLab on notebooks/"
	@echo "make test      - create $(VENV) if needed, install dev extras, lint (ruff, mypy), unit tests + doctests + notebooks (nbval, quick profile)"
	@echo "make test-fast - the same without the notebooks and the tests marked slow (a few minutes)"
	@echo "make lint      - ruff on the code, tests and notebooks; mypy on obstructlib/"

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# torch and torchvision are installed first, together, so pip picks a matching pair.
install-notebook: $(PY)
	$(PIP) install -q torch torchvision
	$(PIP) install -q -e ".[notebook]"

install-dev: $(PY)
	$(PIP) install -q torch torchvision
	$(PIP) install -q -e ".[dev,notebook]"

lab: install-notebook
	# root (containers, cloud VMs) needs --allow-root; nobody else gets it
	cd notebooks && ../$(PY) -m jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: install-dev
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m mypy obstructlib

test: lint
	@start=$$(date +%s); \
	$(TEST_ENV) $(TEST_THREADS) $(PY) -m pytest -p no:cacheprovider $(TEST_PAR) --nbval-lax --doctest-modules --durations=20 \
		tests obstructlib notebooks $(PYTEST_ARGS); \
	status=$$?; echo "make test: $$(( $$(date +%s) - start )) s of tests"; exit $$status

test-fast: lint
	@start=$$(date +%s); \
	$(TEST_ENV) $(TEST_THREADS) $(PY) -m pytest -p no:cacheprovider $(TEST_PAR) --doctest-modules -m "not slow" --durations=10 \
		tests obstructlib $(PYTEST_ARGS); \
	status=$$?; echo "make test-fast: $$(( $$(date +%s) - start )) s of tests"; exit $$status

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
