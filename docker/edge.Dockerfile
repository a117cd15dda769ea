# The edge runtime on a device: the loopline-edge distribution (edge/pyproject.toml) on slim
# Python with headless OpenCV and no torch. Multi-arch (amd64, arm64): the only thing built is
# a pure-Python wheel; numpy, onnxruntime and opencv-python-headless come as manylinux wheels
# for both. Build context: the repository root,
#   docker build -f docker/edge.Dockerfile -t loopline-edge .
# tests/edge/test_edge_distribution.py builds and installs the wheel the way these RUN lines do.

FROM python:3.11-slim AS build
WORKDIR /src
COPY edge ./edge
# Leftovers of a local `pip install ./edge` would go into the wheel (edge.Dockerfile.dockerignore
# keeps them out of the context too).
RUN rm -rf edge/build edge/*.egg-info \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ./edge

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/loopline_edge-*.whl \
    && pip check \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 edge \
    && mkdir -p /var/lib/loopline \
    && chown edge:edge /var/lib/loopline
USER edge
WORKDIR /home/edge
# The agent's --home: outbox, downloaded models, device id and lock survive restarts.
VOLUME /var/lib/loopline
# /metrics of `loopline edge agent` (--metrics-port).
EXPOSE 9464
ENTRYPOINT ["loopline", "edge"]
CMD ["--help"]
