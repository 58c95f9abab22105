# syntax=docker/dockerfile:1.7
#
# The optimodel operator image: Kopf + kubernetes client + prometheus-client, and NO torch
# (it installs only the `operator` extra; the build fails if torch sneaks in).
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/optimodel/optimodel-operator:0.1.0 .
#
# NOT BUILT IN THIS REPOSITORY'S CI: the development machines have no container engine, so this
# file is written and reviewed by hand. Build and scan it in the release pipeline; there, replace
# the exact tag below by its digest (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# optimodel/operator and optimodel/model_builder are links to these folders: copy all three.
COPY pyproject.toml constraints.txt README.md ./
COPY optimodel/ optimodel/
COPY operator/ operator/
COPY model_builder/ model_builder/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --constraint constraints.txt "$(ls /wheels/optimodel-*.whl)[operator]" \
 && /opt/venv/bin/pip check \
 && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then \
      echo "torch must not be in the operator image" >&2; exit 1; \
    fi \
 && /opt/venv/bin/python -c "import kopf, optimodel.operator.api"

FROM ${PYTHON_IMAGE} AS runtime
# A fixed non-root uid/gid (the chart's podSecurityContext uses the same numbers).
RUN groupadd --system --gid 65532 optimodel \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin optimodel
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    OPTIMODEL_SETTINGS_FILE=/etc/optimodel/settings.yaml
USER 65532:65532
# 8080: Kopf liveness (/healthz, settings healthPort); 9090: Prometheus (/metrics, metricsPort).
EXPOSE 8080 9090
ENTRYPOINT ["optimodel"]
CMD ["operator"]
