# Two entry points (see README): `make lab` runs the course, `make test` runs the tests.
# Both need only Python 3.10+, make and the package registries.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Tests never touch the network: open_clip/huggingface stay offline, profile is `quick`.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OBSTRUCT_PROFILE=quick MPLBACKEND=Agg PYTHONHASHSEED=0
PYTEST_ARGS ?=

.PHONY: lab test venv install-notebook install-dev clean help

help:
	@echo "make lab   - create $(VENV), install obstructlib with notebook extras, start JupyterLab on notebooks/"
	@echo "make test  - create $(VENV) if needed, install dev extras, run unit tests + notebooks (nbval, quick profile)"

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

test: install-dev
	@start=$$(date +%s); \
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider --nbval-lax --durations=20 tests notebooks $(PYTEST_ARGS); \
	status=$$?; echo "make test: $$(( $$(date +%s) - start )) s of tests"; exit $$status

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
