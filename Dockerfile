# syntax=docker/dockerfile:1
# fastforward as a container that runs like the blueflood-carbon-forwarder image: same
# environment variables (see docker/docker-entrypoint.sh), same port, plus a spool volume, the
# admin endpoint and a health check. Built from this source tree; no wheel needed beforehand:
#
#   docker build -t fastforward .
#   docker run -p 2004:2004 -e TENANT_ID=123456 -e BLUEFLOOD_URL=http://blueflood:19000 \
#       -v fastforward-spool:/var/lib/fastforward/spool fastforward
#
# The version comes from the git tag in the build context (.git is part of it); from a tree
# without .git, pass it: --build-arg FASTFORWARD_VERSION=X.Y.Z.
ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: compiles the codec for this image's own Python and collects every wheel ---------
FROM ${PYTHON_IMAGE} AS builder
ARG FASTFORWARD_VERSION=""
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# FASTFORWARD_REQUIRE_EXTENSION: a failed compile fails the build instead of shipping the slow
# pure-Python codec. The dependencies' wheels land next to ours, so the final stage installs
# without a network or a compiler.
RUN set -eu; \
    git config --global --add safe.directory /src; \
    if [ -n "$FASTFORWARD_VERSION" ]; then \
        export SETUPTOOLS_SCM_PRETEND_VERSION_FOR_BLUEFLOOD_FASTFORWARD="$FASTFORWARD_VERSION"; \
    fi; \
    FASTFORWARD_REQUIRE_EXTENSION=1 pip wheel --no-cache-dir --wheel-dir /wheels .

# --- the image: no compiler, no build tools ----------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPOOL_DIR=/var/lib/fastforward/spool \
    ADMIN_PORT=9108

RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    set -eu; \
    pip install --no-cache-dir --no-index --find-links /wheels blueflood-fastforward; \
    fastforward --version | grep -q 'codec: cython'; \
    useradd --system --uid 10001 --home-dir /var/lib/fastforward --shell /usr/sbin/nologin \
        fastforward; \
    install -d -o fastforward -g fastforward -m 0750 /var/lib/fastforward \
        /var/lib/fastforward/spool /var/log/fastforward

COPY --chmod=0755 docker/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# Bodies Blueflood cannot take now survive the container here (a named volume by default).
VOLUME ["/var/lib/fastforward/spool"]
USER fastforward
WORKDIR /var/lib/fastforward
EXPOSE 2004 9108
# 503 from /health (Blueflood failing with nowhere to put the data, spool full, receivers
# paused) or no answer makes urlopen raise: exit 1, unhealthy. Python is in the image; curl is not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ADMIN_PORT', '9108') + '/health', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
