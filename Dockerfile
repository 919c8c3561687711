# syntax=docker/dockerfile:1
# The worker image: `vividly-worker job` by default (a Cloud Run Job), `service` for a service or
# a worker pool, and the same image runs Flower and the provisioning command in compose.yaml.
#
# The base is pinned to a Python patch release on a Debian release; in CI, pin its digest too
# (PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...), read from the registry at build time.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv with the project and its runtime extras, no compilers left behind ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vividly_tasks ./vividly_tasks
COPY worker_entry ./worker_entry
# What the image runs: the lesson workload (the default app), the dispatcher, tracing when
# OTEL_TRACES_EXPORTER asks for it, PostgreSQL's driver for DATABASE_URL=postgresql+psycopg://...,
# Flower for compose's dashboard.
RUN /opt/venv/bin/pip install --no-cache-dir ".[lessons,dispatch,tracing,postgresql,flower]"

# --- runtime: Python, ffmpeg and espeak-ng for the videos, the virtualenv, a non-root user ---
FROM ${PYTHON_IMAGE} AS runtime
# Exact Debian versions are not pinned: the base image pins the Debian release, and a pinned
# version disappears from the archive at its next security update, breaking every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg espeak-ng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 vividly \
    && useradd --system --uid 10001 --gid vividly --home-dir /var/lib/vividly --create-home \
       --shell /usr/sbin/nologin vividly
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIVIDLY_DATA_DIR=/var/lib/vividly \
    LOG_FORMAT=json \
    PORT=8080
WORKDIR /var/lib/vividly
USER 10001:10001
# Service mode's /healthz and /readyz (Cloud Run sets PORT); a job listens on nothing.
EXPOSE 8080
ENTRYPOINT ["vividly-worker"]
CMD ["job"]
