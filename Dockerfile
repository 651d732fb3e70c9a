# syntax=docker/dockerfile:1
# One image for every fasttask role; the command picks it (see deploy/docker/entrypoint.sh):
#
#   docker run IMAGE serve  [fasttask serve flags]    an API process (the default command)
#   docker run IMAGE worker [fasttask worker flags]   a worker of the Redis queue
#   docker run IMAGE runpod                            python -m <module of FTAPI_APP>, with FTAPI_BACKEND=runpod
#   docker run IMAGE <anything else>                   runs it as is (a shell, `rq info`, ...)
#
# The app is FTAPI_APP (MODULE:APP, importable from /app), or an explicit MODULE:APP after the role.
#
# Build arguments:
#   PYTHON_VERSION   Python of both stages (default 3.12; fasttask needs >= 3.10)
#   EXTRAS           fasttask extras to install: redis, s3, runpod, media, all; comma-separated (default redis)
#   EXTRA_PACKAGES   more pip requirements for your app, space-separated (e.g. "torch==2.5.1 pillow")
#   BUILD_PACKAGES   Debian packages the build stage needs to compile them (e.g. "build-essential"); never in the
#                    final image
#   APP_DIR          directory of the build context copied to /app/APP_DIR (default examples)
#
#   docker build -t fasttask .
#   docker build -t my-service --build-arg EXTRAS=all --build-arg APP_DIR=service .
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=redis
ARG EXTRA_PACKAGES=""
ARG BUILD_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ -n "$BUILD_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $BUILD_PACKAGES && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fasttask ./fasttask
RUN /opt/venv/bin/pip install ".[${EXTRAS}]" $EXTRA_PACKAGES

FROM python:${PYTHON_VERSION}-slim AS runtime
# tini as PID 1: forwards SIGTERM to the fasttask process (which finishes its job, then exits) and reaps the
# zombies of whatever subprocesses a task starts. No compilers, no pip cache, no apt lists in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fasttask \
    && useradd --system --uid 10001 --gid fasttask --home-dir /app --no-create-home --shell /usr/sbin/nologin fasttask
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/fasttask-entrypoint
ARG APP_DIR=examples
WORKDIR /app
COPY ${APP_DIR} /app/${APP_DIR}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FTAPI_APP=examples.fries:app \
    FTAPI_HOST=0.0.0.0 \
    FTAPI_PORT=8000
EXPOSE 8000
USER 10001:10001
# Liveness of an API process, without curl (not in the slim image). Workers serve no HTTP: their containers
# turn this off (compose: healthcheck.disable; Kubernetes ignores HEALTHCHECK and uses its own probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FTAPI_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/fasttask-entrypoint"]
CMD ["serve"]
