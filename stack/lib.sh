# Shared helpers of the stack/ tools (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables here are used by the scripts that source this file

STACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$STACK_DIR/.." && pwd)
# build outputs (rootfs, wheelhouse, staged build context, saved images): git-ignored
BUILD_DIR=${CCTV_STACK_BUILD:-$ROOT/build/stack}
# models and media, never in the repository
SHARED=${CCTV_SHARED:-$ROOT/../shared}
STACK_NAME=${CCTV_STACK_NAME:-cctv}

# Debian's docker 20.10 client drives BuildKit (RUN --mount) without buildx; a newer client
# first on PATH may lack buildx. Prefer /usr/bin/docker when it exists.
if [ -z "${DOCKER:-}" ]; then
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER_BUILDKIT=1

_ts() { date +%H:%M:%S; }
log() { echo "[$(_ts)] $*" >&2; }
die() { echo "[$(_ts)] ERROR: $*" >&2; exit 1; }

# python with pip on the host (the project venv when there is one)
host_python() {
    if [ -n "${CCTV_STACK_PYTHON:-}" ]; then echo "$CCTV_STACK_PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else command -v python3
    fi
}

# the Debian mirror apt on this host uses (debootstrap uses the same)
debian_mirror() {
    if [ -n "${CCTV_STACK_DEBIAN_MIRROR:-}" ]; then echo "$CCTV_STACK_DEBIAN_MIRROR"; return; fi
    local m
    m=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
            /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | head -n1 | awk '{print $2}')
    echo "${m:-http://deb.debian.org/debian}"
}

docker_ok() { "$DOCKER" info >/dev/null 2>&1; }

# wait until "$@" succeeds or $1 seconds pass: wait_for SECONDS what cmd...
wait_for() {
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
        sleep 1
    done
}
