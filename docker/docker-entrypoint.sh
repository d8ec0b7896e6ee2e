#!/bin/bash
# Starts fastforward the way the blueflood-carbon-forwarder image started `twistd
# blueflood-forward`, from the same environment variables and with the same defaults, so an
# existing `docker run -e ...` line keeps working. Options given to `docker run IMAGE ...` are
# appended (they win over the variables); a first argument that is not an option is run as a
# command instead (`docker run IMAGE fastforward decode ...`, `docker run -it IMAGE bash`).
set -eo pipefail
set -f  # no globbing: ENDPOINT is split on commas and spaces below, nothing else

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

: "${TENANT_ID=123}"
: "${LIMIT=1000000}"
: "${ENDPOINT=tcp:2004}"
: "${BLUEFLOOD_URL=localhost:19000}"  # no scheme, as in the original; http:// is assumed
: "${METRIC_PREFIX=}"
: "${DEFAULT_TTL=86400}"
: "${METRICS_SEND_INTERVAL=30.0}"   # the original image defined it but never passed it on
: "${KEYSTONE_USER=}"
: "${KEYSTONE_KEY=}"
: "${AUTH_URL=https://identity.api.rackspacecloud.com/v2.0/tokens}"

args=()
# Several endpoints may be given, separated by commas or spaces.
for endpoint in ${ENDPOINT//,/ }; do
  args+=(-e "$endpoint")
done
args+=(-b "$BLUEFLOOD_URL" --tenant "$TENANT_ID" --ttl "$DEFAULT_TTL" --limit "$LIMIT")
args+=(-i "$METRICS_SEND_INTERVAL" --auth_url "$AUTH_URL")
if [ -n "$METRIC_PREFIX" ]; then
  args+=(-p "$METRIC_PREFIX")
fi
if [ -n "$KEYSTONE_USER" ]; then
  args+=(-u "$KEYSTONE_USER")
fi
# The key goes through the environment, not argv: argv is readable by every local user.
if [ -n "$KEYSTONE_KEY" ]; then
  export FASTFORWARD_KEY="$KEYSTONE_KEY"
fi
unset KEYSTONE_KEY
if [ -n "$TWISTED_LOG_LEVEL" ]; then
  args+=(--log_level "$(printf '%s' "$TWISTED_LOG_LEVEL" | tr '[:upper:]' '[:lower:]')")
fi

# LOG_DIR, LOG_ROTATE_LENGTH and MAX_LOG_ROTATED_FILES are read by fastforward itself: with
# LOG_DIR set it writes LOG_DIR/carbon_forwarder.log, rotated by size; without it, stderr
# (`docker logs`). The original defaulted to /var/log/, which a non-root user cannot write.
if [ -n "$LOG_DIR" ]; then
  if ! mkdir -p "$LOG_DIR" 2>/dev/null || [ ! -w "$LOG_DIR" ]; then
    echo "docker-entrypoint: LOG_DIR=$LOG_DIR is not writable by uid $(id -u); logging to stderr instead" >&2
    unset LOG_DIR
  fi
fi

# exec: fastforward becomes PID 1 and receives `docker stop`'s SIGTERM itself, then drains.
exec fastforward "${args[@]}" "$@"
