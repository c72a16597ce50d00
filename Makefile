# Two entry points (see README): `make lab` runs the course, `make test` runs the tests.
# Both need only Python 3.10+, make and the package registries.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Tests never touch the network: open_clip/huggingface stay offline, loaders fetch nothing on first use
# (OBSTRUCT_DOWNLOAD=0), profile is `quick`. MPLBACKEND stays unset: the notebook kernels render figures.
# Tests run on CPU even where a GPU exists (as open_clip's tests do): CUDA_VISIBLE_DEVICES is empty.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OBSTRUCT_PROFILE=quick OBSTRUCT_DOWNLOAD=0 PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES=
# Two pytest workers of one thread each (pytest-xdist; a notebook's cells stay together on one worker,
# as nbval needs): on 2 cores that beats one two-thread process on the tiny models, and never runs
# 2 x 2 threads on 2 cores. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
TEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)
TEST_THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_ARGS ?=
LINT_PATHS := obstructlib tests benchmarks notebooks docs conftest.py

.PHONY: lab test test-fast lint docs venv install-notebook install-dev gpu-wheels gpu-check clean help

help:
	@echo "make lab       - create $(VENV), install obstructlib with notebook extras, start JupyterLab on notebooks/"
	@echo "make test      - create $(VENV) if needed, install dev extras, lint (ruff, mypy), unit tests + doctests + notebooks (nbval, quick profile)"
	@echo "make test-fast - the same without the notebooks and the tests marked slow (a few minutes)"
	@echo "make lint      - ruff on the code, tests and notebooks; mypy on obstructlib/"
	@echo "make docs      - execute the notebooks (quick profile) and render them to HTML: docs/_build/html/index.html"
	@echo "make gpu-wheels - open_clip_torch and its deps as wheels in benchmarks/wheels/, for an offline GPU machine"
	@echo "make gpu-check  - on a GPU machine (offline; carry benchmarks/wheels): CLIP throughput eager and compiled,"
	@echo "                  each protection at 224 px; JSON lines in \$$OUT (bash benchmarks/gpu_check.sh)"

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

# The course as a static site: every notebook executed in `quick` and rendered to HTML with its figures
# (docs/_build/html/index.html; 27 minutes on 2 CPU cores, measured 2026-12-08). NOTEBOOKS=notebooks/00_setup_and_tour.ipynb
# renders one.
NOTEBOOKS ?=
docs: install-dev
	$(PY) docs/build.py $(NOTEBOOKS)

# Wheels for benchmarks/gpu_check.sh on an offline GPU machine that has torch and torchvision but not
# open_clip: open_clip_torch and its dependency closure minus torch, torchvision and their own deps, plus
# setuptools/wheel for pip's isolated build of obstructlib. Pinned to the versions in $(VENV) (the tested
# set); regex, pyyaml and tomli are compiled per Python version, so each likely Python of the GPU machine
# (3.10-3.14) gets the newest wheel up to that pin (regex's newest skip 3.10). safetensors, hf-xet and
# wcwidth are abi3, the rest pure Python; tomli and exceptiongroup serve Python 3.10 only. The folder
# (about 22 MB) travels with the device tool's `carry`, not with git.
GPU_WHEELS := open_clip_torch ftfy wcwidth timm huggingface_hub hf-xet safetensors tqdm httpx2 httpcore2 \
	h11 anyio idna truststore click filelock fsspec packaging typing_extensions exceptiongroup \
	setuptools wheel
GPU_WHEELS_COMPILED := regex pyyaml tomli
GPU_PYTHONS := 3.10 3.11 3.12 3.13 3.14
GPU_WHEEL_DIR := benchmarks/wheels
# $(call gpu_pins,OP,NAMES): NAME<OP><version in $(VENV)> for each installed NAME, the bare NAME otherwise
gpu_pins = $$($(PY) -c "import sys, importlib.metadata as md; \
	have = {d.metadata['Name'].lower().replace('_', '-'): d.version for d in md.distributions()}; \
	print(' '.join(n + (sys.argv[1] + have[k] if (k := n.lower().replace('_', '-')) in have else '') \
	for n in sys.argv[2:]))" '$(1)' $(2))
GPU_DOWNLOAD := $(PIP) download -q --no-deps --only-binary=:all: -d $(GPU_WHEEL_DIR)

gpu-wheels: $(PY)
	rm -rf $(GPU_WHEEL_DIR)
	$(GPU_DOWNLOAD) --platform manylinux2014_x86_64 $(call gpu_pins,==,$(GPU_WHEELS))
	for v in $(GPU_PYTHONS); do \
		$(GPU_DOWNLOAD) --implementation cp --python-version $$v --platform manylinux2014_x86_64 \
			$(call gpu_pins,<=,$(GPU_WHEELS_COMPILED)) || exit 1; \
	done
	@ls $(GPU_WHEEL_DIR) | wc -l | xargs echo "wheels:"; du -sh $(GPU_WHEEL_DIR)

# needs no venv: the GPU machine's own python, which has torch (see the script's header)
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
