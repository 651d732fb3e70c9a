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
#   BASE_IMAGE       the Python image of both stages, pinned by digest (Python 3.12 on Debian 12). Another Python
#                    (3.10 or newer): --build-arg BASE_IMAGE=python:3.11-slim-bookworm, or that tag's digest
#   EXTRAS           fasttask extras to install: redis, s3, runpod, media, all; comma-separated (default redis)
#   EXTRA_PACKAGES   more pip requirements for your app, space-separated (e.g. "torch==2.5.1 pillow")
#   BUILD_PACKAGES   Debian packages the build stage needs to compile them (e.g. "build-essential"); never in the
#                    final image
#   APP_DIR          directory of the build context copied to /app/APP_DIR (default examples)
#
#   docker build -t fasttask .
#   docker build -t my-service --build-arg EXTRAS=all --build-arg APP_DIR=service .
#
# Updating the pinned base (security fixes land in new builds of the same tag): look up the tag's current
# digest and replace the one below, e.g.
#   docker buildx imagetools inspect python:3.12-slim-bookworm          (the "Digest:" line)
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/library/python:3.12-slim-bookworm
# then rebuild and run scripts/image-smoke. Dependabot and Renovate can open these updates for you.
ARG BASE_IMAGE=python:3.12-slim-bookworm@sha256:d50fb7611f86d04a3b0471b46d7557818d88983fc3136726336b2a4c657aa30b

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=redis
ARG EXTRA_PACKAGES=""
ARG BUILD_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ -n "$BUILD_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $BUILD_PACKAGES \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml, the version or a build
# argument changes, not on every code change (torch and friends take minutes). The package is a stub here.
COPY pyproject.toml ./
COPY fasttask/_version.py ./fasttask/_version.py
RUN touch README.md fasttask/__init__.py \
    && /opt/venv/bin/pip install ".[${EXTRAS}]" $EXTRA_PACKAGES
# Then fasttask itself, without touching the dependencies.
COPY README.md ./
COPY fasttask ./fasttask
RUN /opt/venv/bin/pip install --no-deps --force-reinstall .

FROM ${BASE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to the fasttask process (which finishes its job, then exits) and reaps the
# zombies of whatever subprocesses a task starts. Run the image without another init (compose: no `init: true`,
# docker run: no --init); one init is enough. No compilers, no pip cache, no apt lists or caches in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 10001 fasttask \
    && useradd --system --uid 10001 --gid fasttask --home-dir /app --no-create-home --shell /usr/sbin/nologin fasttask
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/fasttask-entrypoint
# the worker pods' deletion-cost keeper on Kubernetes (deploy/k8s/base/worker.yaml)
COPY --chmod=0755 deploy/docker/pod_deletion_cost.py /usr/local/bin/fasttask-pod-deletion-cost
# makes FTAPI_S3_BUCKET on an S3-compatible store (the compose stack's s3-init; needs the s3 extra)
COPY --chmod=0755 deploy/docker/make_bucket.py /usr/local/bin/fasttask-make-bucket
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
# Liveness of an API process, without curl (not in the slim image). Workers serve no API (at most their metrics
# port): their containers turn this off (compose: healthcheck.disable; Kubernetes ignores HEALTHCHECK and probes
# a worker's metrics port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FTAPI_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/fasttask-entrypoint"]
CMD ["serve"]
