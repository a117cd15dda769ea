# The two commands of the README: `make demo` (set up and run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.loopline-installed
# Label Studio, the labeling server `loopline labelstudio up` runs, lives in a venv of its own.
LS_VENV ?= .venv-labelstudio
LS_SPEC := label-studio>=1.23,<1.24
LS_STAMP := $(LS_VENV)/.loopline-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAGAS_DO_NOT_TRACK := true

.PHONY: setup demo test lint serve clean bench-rag browser ocr

setup: $(STAMP) $(LS_STAMP)

# torch first, from the pinned releases on local disk (a bare `torch` would pull GBs of CUDA).
# ultralytics needs the GUI OpenCV build; the edge extra and label-studio-sdk (the `label`
# extra) name the headless one, and both write cv2/: keep exactly one on purpose, the GUI
# build, reinstalled alone so cv2/ is whole. `pip check` then reports only that the SDK's
# headless build is absent (its cv2 use, brush-mask conversion, works with the GUI build).
# numpy stays where the resolver put it for the SDK's OpenCV pin (2.2.x), a version every
# package here accepts. tests/vision/test_label_extra.py checks all of this.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[rag,vision,edge,eval,label,s3,queue,ray,dev]"
	$(PIP) uninstall -q -y opencv-python-headless opencv-python
	$(PIP) install -q --no-deps opencv-python
	touch $(STAMP)

# Label Studio pins Django 5.2, numpy 2.2 and its own SDK: kept out of the ML stack's venv.
# loopline talks to it over HTTP only (label-studio-sdk, in .venv through the `label` extra).
$(LS_STAMP): Makefile
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q "$(LS_SPEC)"
	touch $(LS_STAMP)

demo: setup
	$(PY) -m rag.demo
	$(VENV)/bin/loopline demo

# Debian's chromium drives the page's browser tests (tests/rag/test_web_page.py); Playwright's own
# browser download cannot work offline.
browser:
	command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

# Tesseract reads scanned PDF pages and PNG/JPEG documents (rag/ocr.py); without it they are dead letters.
ocr:
	command -v tesseract >/dev/null 2>&1 || apt-get install -y -q tesseract-ocr tesseract-ocr-eng || (apt-get update -q && apt-get install -y -q tesseract-ocr tesseract-ocr-eng)

test: setup lint browser ocr
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
