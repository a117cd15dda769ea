# Label Studio for the labelers, on the deployment's PostgreSQL: the release `make` installs
# (label-studio>=1.23,<1.24 in the Makefile; tests/docker/test_images.py checks the pin is in it),
# started the way `loopline labelstudio up` starts it, so what the project's tests run is what
# runs here. PostgreSQL needs nothing more: label-studio 1.23 depends on psycopg[binary] 3.
# Its settings are environment variables: DJANGO_DB=default and POSTGRE_NAME/USER/PASSWORD/
# HOST/PORT pick the database; LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN make the first account.
# `label-studio start` serves with Django's threaded server: enough for a team of labelers; for
# many more, heartexlabs/label-studio:1.23.2 (nginx + uWSGI) takes the same variables.
# Build context: this folder (nothing is copied).
FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1 \
    LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data \
    LABEL_STUDIO_LATEST_VERSION_CHECK=false LABEL_STUDIO_COLLECT_ANALYTICS=false
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "label-studio==1.23.2"
RUN useradd --create-home --uid 10001 labelstudio \
    && mkdir -p /label-studio/data \
    && chown labelstudio:labelstudio /label-studio/data
USER labelstudio
WORKDIR /home/labelstudio
# Uploads, exports and avatars; projects, tasks and annotations live in PostgreSQL.
VOLUME /label-studio/data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8080"]
