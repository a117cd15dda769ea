# The two commands of the README: `make demo` (set up and run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.loopline-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAGAS_DO_NOT_TRACK := true

.PHONY: setup demo test lint serve clean bench-rag

setup: $(STAMP)

# torch first, from the pinned releases on local disk (a bare `torch` would pull GBs of CUDA).
# ultralytics needs the GUI OpenCV build, the edge extra names the headless one, and both
# write cv2/: keep exactly one on purpose, the GUI build, reinstalled alone so cv2/ is whole.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[rag,vision,edge,eval,dev]"
	$(PIP) uninstall -q -y opencv-python-headless opencv-python
	$(PIP) install -q --no-deps opencv-python
	touch $(STAMP)

demo: setup
	$(PY) -m rag.demo
	$(PY) -m vision.demo

test: setup lint
	$(PY) -m pytest -q

# ruff (configured in pyproject.toml): lint and formatting are checked, not rewritten.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

serve: setup
	$(VENV)/bin/loopline serve

bench-rag: setup
	$(PY) -m evaluation.benchmarks.rag ../shared/corpora/sourcegraph-handbook/content --qa ../shared/eval/handbook-qa-dev.jsonl --max-docs 150

clean:
	rm -rf .loopline .pytest_cache build *.egg-info
