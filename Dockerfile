# syntax=docker/dockerfile:1
# fastforward as a container that runs like the blueflood-carbon-forwarder image: same
# environment variables (see docker/docker-entrypoint.sh), same port.
#
#   python -m build --wheel            # or download the wheels.yml artifacts into ./dist
#   docker build -t fastforward .
#   docker build -t fastforward --build-arg FASTFORWARD_VERSION=1.0.0 .   # from PyPI instead
#   docker run -p 2004:2004 -e TENANT_ID=123456 -e BLUEFLOOD_URL=http://blueflood:19000 fastforward
FROM python:3.12-slim

# Empty: install the wheel found in ./dist; a version: install that release from PyPI.
ARG FASTFORWARD_VERSION=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The build context is only ./dist/*.whl and the entrypoint (.dockerignore). --only-binary:
# the image has no compiler, so an sdist would silently give the slow pure-Python codec.
RUN --mount=type=bind,source=.,target=/context \
    set -eu; \
    if [ -n "$FASTFORWARD_VERSION" ]; then \
        pip install --no-cache-dir --only-binary fastforward "fastforward==$FASTFORWARD_VERSION"; \
    else \
        pip install --no-cache-dir --only-binary fastforward --no-index --no-deps \
            --find-links /context/dist fastforward \
        || { echo "no fastforward wheel for this platform in ./dist" >&2; exit 1; }; \
        pip install --no-cache-dir fastforward; \
    fi; \
    fastforward --version | grep -q 'codec: cython'; \
    useradd --system --uid 10001 --home-dir /var/lib/fastforward --shell /usr/sbin/nologin \
        fastforward; \
    install -d -o fastforward -g fastforward -m 0750 /var/lib/fastforward /var/log/fastforward

COPY --chmod=0755 docker/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER fastforward
WORKDIR /var/lib/fastforward
EXPOSE 2004
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
