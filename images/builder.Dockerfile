# syntax=docker/dockerfile:1.7
#
# The optimodel builder image (one Job per OptimizedModel generation): torch, transformers, onnx,
# onnxruntime. torch is pinned exactly (torch==2.13.0) and comes from the index chosen by
# TORCH_INDEX_URL:
#
#   CPU (default):  docker build -f images/builder.Dockerfile -t ghcr.io/optimodel/optimodel-builder:0.1.0 .
#   CUDA:           docker build -f images/builder.Dockerfile \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                     -t ghcr.io/optimodel/optimodel-builder:0.1.0-cuda .
#
# The CUDA wheels carry their CUDA libraries, so both variants share the same slim base; the
# node only needs the NVIDIA driver.
#
# NOT BUILT IN THIS REPOSITORY'S CI: the development machines have no container engine, so this
# file is written and reviewed by hand. Build and scan it in the release pipeline; there, replace
# the exact tag below by its digest (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY optimodel/ optimodel/
COPY operator/ operator/
COPY model_builder/ model_builder/
# torch first, pinned exactly, from the chosen index; the rest then resolves against it
# (constraints.txt pins torch==2.13.0 too, which a +cpu / +cuXXX local build satisfies).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --constraint constraints.txt "$(ls /wheels/optimodel-*.whl)[builder]" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__" \
 && /opt/venv/bin/python -c "import onnxruntime, transformers, optimodel.model_builder.spec"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 65532 optimodel \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin optimodel
COPY --from=build /opt/venv /opt/venv
# Caches go to /tmp so the Job can run with a read-only root filesystem and an emptyDir at /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
USER 65532:65532
# The builder Job runs `python -m optimodel.model_builder` with the build spec as arguments.
ENTRYPOINT ["python", "-m", "optimodel.model_builder"]
CMD ["--help"]
