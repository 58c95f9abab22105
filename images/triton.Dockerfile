# syntax=docker/dockerfile:1.7
#
# The Triton serving image: NVIDIA's Triton 24.10 (Triton 2.51, onnxruntime 1.19.2 backend,
# python backend on Python 3.10) plus exactly the packages the text-in ensemble's python steps
# import (images/triton-requirements.txt). The operator's `tritonImage` setting and the chart's
# `triton.image` name it; the served repository (model.py files, tokenizer.json, model.onnx)
# comes from the artifact store, so this image never changes with a model.
#
#   docker build -f images/triton.Dockerfile -t ghcr.io/optimodel/optimodel-triton:0.1.0 .
#
# Why a derived image and not a python-backend execution environment (EXECUTION_ENV_PATH, a
# conda-pack tarball per model): the tokenizer step needs two small wheels, the same for
# every model; an image pins them once, starts without unpacking anything and works with a
# read-only root filesystem.
#
# NOT BUILT IN THIS REPOSITORY'S CI: the development machines have no container engine, so this
# file is written and reviewed by hand. Build and scan it in the release pipeline; there, replace
# the tag below by its digest (nvcr.io/nvidia/tritonserver:24.10-py3@sha256:...).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM ${TRITON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY images/triton-requirements.txt /opt/optimodel/triton-requirements.txt
# The steps' own files, only to check them against this image's Python at build time.
COPY model_builder/served/tokenize_model.py model_builder/served/postprocess_model.py /tmp/steps/
RUN python3 -m pip install --no-deps --only-binary=:all: -r /opt/optimodel/triton-requirements.txt \
 && python3 -c "import sys; assert sys.version_info[:2] == (3, 10), sys.version" \
 && python3 -c "import numpy, tokenizers; from tokenizers import Tokenizer" \
 && cd /tmp/steps && python3 -c "import tokenize_model, postprocess_model" \
 && rm -rf /tmp/steps
USER triton-server
