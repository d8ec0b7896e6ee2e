#!/bin/bash
# Starts fastforward the way the blueflood-carbon-forwarder image started `twistd
# blueflood-forward`, from the same environment variables and with the same defaults, so an
# existing `docker run -e ...` line keeps working. Every FASTFORWARD_<OPTION> variable works too.
# Three differences keep the "lossless" promise: TENANT_ID has no default (refused unless a dry
# run), a disk spool is on (SPOOL_DIR), and so is the admin endpoint (ADMIN_PORT, for /health).
# Options given to `docker run IMAGE ...` are appended (they win over the variables); a first
# argument that is not an option is run as a command instead (`docker run IMAGE fastforward
# decode ...`, `docker run -it IMAGE bash`).
set -eo pipefail
set -f  # no globbing: ENDPOINT is split on commas and spaces below, nothing else

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

# No default tenant (the original image silently sent to tenant 123): without one, refuse to
# start, unless this is a dry run or a config file may name it. Options given to `docker run`
# count too (and `--help` / `--version` need no tenant).
tenant_given() {
  [ -n "$TENANT_ID" ] || [ -n "$FASTFORWARD_TENANT" ] || [ -n "$FASTFORWARD_CONFIG" ] && return 0
  local prev="" a
  for a in "$@"; do
    case "$a" in
      -t?* | --tenant=?* | -c?* | --config=?* | -h | --help | -V | --version) return 0 ;;
    esac
    case "$prev" in
      -t | --tenant | -c | --config) [ -n "$a" ] && return 0 ;;
    esac
    prev=$a
  done
  return 1
}

dry_run() {
  [ "$BLUEFLOOD_URL" = - ] || [ "$FASTFORWARD_BLUEFLOOD" = - ] && return 0
  case "${FASTFORWARD_DRY_RUN,,}" in
    1 | true | yes | on | y | t) return 0 ;;
  esac
  local prev="" a
  for a in "$@"; do
    case "$a" in
      --dry-run | --dry_run | --dry-run=true | --dry_run=true | -b- | --blueflood=-) return 0 ;;
    esac
    case "$prev" in
      -b | --blueflood) [ "$a" = - ] && return 0 ;;
    esac
    prev=$a
  done
  return 1
}

if ! tenant_given "$@" && ! dry_run "$@"; then
  echo "docker-entrypoint: TENANT_ID is not set: set it to your Blueflood tenant" \
    "(docker run -e TENANT_ID=...), or BLUEFLOOD_URL=- for a dry run" >&2
  exit 2
fi

args=()

# option FLAG VAR TWIN DEFAULT: pass FLAG with $VAR, or DEFAULT when VAR is unset, except when
# only fastforward's own variable TWIN is set: on the command line the default would beat it.
option() {
  local flag=$1 var=$2 twin=$3 default=$4 value
  if [ -n "${!var+set}" ]; then
    value=${!var}
  elif [ -n "${!twin+set}" ]; then
    return 0
  else
    value=$default
  fi
  if [ "$flag" = -e ]; then
    # Several endpoints may be given, separated by commas or spaces.
    for endpoint in ${value//,/ }; do
      args+=(-e "$endpoint")
    done
  else
    args+=("$flag" "$value")
  fi
}

option -e ENDPOINT FASTFORWARD_ENDPOINT "tcp:2004"
# No scheme, as in the original image; fastforward assumes http://.
option -b BLUEFLOOD_URL FASTFORWARD_BLUEFLOOD "localhost:19000"
if [ -n "$TENANT_ID" ]; then
  args+=(--tenant "$TENANT_ID")
fi
option --ttl DEFAULT_TTL FASTFORWARD_TTL "86400"
option --limit LIMIT FASTFORWARD_LIMIT "1000000"
# The original image defined METRICS_SEND_INTERVAL but never passed it on; it is honoured here.
option -i METRICS_SEND_INTERVAL FASTFORWARD_INTERVAL "30.0"
option --auth_url AUTH_URL FASTFORWARD_AUTH_URL "https://identity.api.rackspacecloud.com/v2.0/tokens"
# Lossless by default: bodies Blueflood cannot take now wait in the spool, a VOLUME in the
# image, and are replayed after a restart. SPOOL_DIR= (empty) turns it off.
option --spool-dir SPOOL_DIR FASTFORWARD_SPOOL_DIR "/var/lib/fastforward/spool"
# /metrics and /health (the image's HEALTHCHECK reads /health on ADMIN_PORT). All interfaces
# of the container by default, so Prometheus can scrape it once the port is published.
if [ -z "${FASTFORWARD_ADMIN_ENDPOINT+set}" ] && [ -n "${ADMIN_PORT-9108}" ]; then
  args+=(--admin-endpoint "tcp:port=${ADMIN_PORT-9108}:interface=${ADMIN_INTERFACE:-0.0.0.0}")
fi
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

# TWISTED_LOG_LEVEL, LOG_DIR, LOG_ROTATE_LENGTH and MAX_LOG_ROTATED_FILES are read by fastforward
# itself: with LOG_DIR set it writes LOG_DIR/carbon_forwarder.log, rotated by size; without it,
# stderr (`docker logs`). The original defaulted to /var/log/, which a non-root user cannot write.
if [ -n "$LOG_DIR" ]; then
  if ! mkdir -p "$LOG_DIR" 2>/dev/null || [ ! -w "$LOG_DIR" ]; then
    echo "docker-entrypoint: LOG_DIR=$LOG_DIR is not writable by uid $(id -u); logging to stderr instead" >&2
    unset LOG_DIR
  fi
fi

# exec: fastforward becomes PID 1 and receives `docker stop`'s SIGTERM itself, then drains.
exec fastforward "${args[@]}" "$@"
