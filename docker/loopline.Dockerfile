# syntax=docker/dockerfile:1
# loopline's central images, one file so that the roles share their source layer and their pins:
#   central  the API (`loopline serve`, the default command), the job workers (`loopline worker`)
#            and the MLflow server (`mlflow server`, the same MLflow as its clients): Python 3.11
#            slim with CPU-only torch.
#   trainer  `loopline worker --queue train` on an NVIDIA GPU: CUDA 13.0 base (the CUDA that
#            torch 2.14.1's PyPI wheels are built for), the same code and extras.
# Build context: the repository root; docker/loopline.Dockerfile.dockerignore says what goes in.
#   docker build -f docker/loopline.Dockerfile --target central -t loopline .
#   docker build -f docker/loopline.Dockerfile --target trainer -t loopline-trainer .
# torch==2.14.1 torchvision==0.29.1 here as in the Makefile (tests/docker/test_images.py compares).
# OpenCV: ultralytics names the GUI build, label-studio-sdk the headless one, and both write cv2/.
# A container has no display (and the GUI build needs libGL), so the headless build alone stays,
# at the version the resolver chose for the SDK, reinstalled so that cv2/ is whole. `pip check`
# then reports ultralytics' missing GUI build, as expected; anything else it reports fails the build.

# --- the code, once for every image ----------------------------------------------------------
FROM scratch AS source
COPY pyproject.toml README.md /app/
COPY shared /app/shared
COPY rag /app/rag
COPY vision /app/vision
COPY edge /app/edge
COPY evaluation /app/evaluation

# --- API, workers, MLflow server -------------------------------------------------------------
FROM python:3.11-slim-bookworm AS central
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    LOOPLINE_HOME=/data LOOPLINE_HOST=0.0.0.0 LOOPLINE_PORT=8000
# Tesseract: OCR of scanned PDF pages and PNG/JPEG documents (without it they are dead letters).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY --from=source /app /app
WORKDIR /app
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[rag,vision,label,s3,queue]" torch==2.14.1 torchvision==0.29.1 \
    && headless="$(pip show opencv-python-headless | sed -n 's/^Version: //p')" \
    && pip uninstall -y opencv-python opencv-python-headless \
    && pip install --no-deps "opencv-python-headless==${headless}" \
    && ! { pip check || true; } | grep -v -e "^No broken requirements found" \
        -e "^ultralytics [^ ]* requires opencv-python, which is not installed" \
    && rm -rf build ./*.egg-info \
    && python -c "import cv2, torch; assert torch.__version__.startswith('2.14.1'), torch.__version__" \
    && loopline --help >/dev/null
RUN useradd --create-home --uid 10001 loopline \
    && mkdir -p /data /etc/loopline \
    && chown loopline:loopline /data
USER loopline
WORKDIR /home/loopline
# The ONNX export of the embedding model, into this user's cache now rather than at first start.
RUN loopline rag embedding-model
# LOOPLINE_HOME: uploads, labeling work folders, generated secrets. Shared by the API replicas and
# the workers of one deployment (uploads are ingested by a worker).
VOLUME /data
EXPOSE 8000
# Healthy = ready for traffic (`/readyz`: the stores answer, the embedding model is loaded): an
# upgrade replaces the next replica only once the last one is healthy (README, Deployment).
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["loopline", "serve"]

# --- GPU trainer -------------------------------------------------------------------------------
# `base`, not `runtime`: torch's wheels bring their own CUDA libraries (cuda-toolkit 13.0 and
# nvidia-* wheels); the base image adds the CUDA 13.0 driver requirement, checked at start by the
# NVIDIA container toolkit. Ubuntu 24.04's Python is 3.12 (loopline needs 3.11 or newer).
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS trainer
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    LOOPLINE_HOME=/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.14.1 torchvision==0.29.1
COPY --from=source /app /app
WORKDIR /app
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[rag,vision,label,s3,queue]" torch==2.14.1 torchvision==0.29.1 \
    && headless="$(pip show opencv-python-headless | sed -n 's/^Version: //p')" \
    && pip uninstall -y opencv-python opencv-python-headless \
    && pip install --no-deps "opencv-python-headless==${headless}" \
    && ! { pip check || true; } | grep -v -e "^No broken requirements found" \
        -e "^ultralytics [^ ]* requires opencv-python, which is not installed" \
    && rm -rf build ./*.egg-info \
    && python -c "import cv2, torch; assert torch.__version__.startswith('2.14.1'), torch.__version__" \
    && loopline --help >/dev/null
RUN useradd --create-home --uid 10001 loopline \
    && mkdir -p /data /etc/loopline \
    && chown loopline:loopline /data
USER loopline
WORKDIR /home/loopline
VOLUME /data
# Healthy while the GPU is usable (a container can lose it, e.g. on a host cgroup reload).
HEALTHCHECK --interval=5m --timeout=60s --start-period=60s --retries=2 \
    CMD ["python", "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"]
CMD ["loopline", "worker", "--queue", "train"]
