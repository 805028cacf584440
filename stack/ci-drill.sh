#!/usr/bin/env bash
# CI stage: build the images offline, start a real 3-node Docker Swarm (docker-in-docker),
# deploy docker-stack.yml, stream a clip, run the failover drill, record the figures, and tear
# everything down - also on failure or when the stage is interrupted.
#
#   bash stack/ci-drill.sh
#
# Exits non-zero when the stack does not deploy, a service does not become healthy, the stream
# check fails (no results, no MJPEG frame, no warm standby), a failover round does not recover,
# the take-over gaps miss their goals (`docker kill`: median <= 2 s, no round > 4 s; planned
# hand-over: median <= 0.3 s, no round > 0.6 s), or a frame ingest acknowledged is lost.
#
# Needs root and a Debian bookworm host (installs docker.io, debootstrap, iptables with apt-get
# when missing, and starts dockerd when none is running). Budget: ~40 minutes on 2 cores;
# measured ~5 minutes from nothing (debootstrap, images, swarm, drill) on a 2-core machine.
#
# Environment (optional):
#   CCTV_STACK_BUILD         build outputs (default build/stack, git-ignored)
#   CCTV_STACK_DRILL_ARGS    drill.py arguments (default: 5 kill rounds, 1 stop round,
#                            1 rolling update, 3 rounds without standby)
#   CCTV_STACK_RECORD        1 (default) = record figures in bench/results.json + docs/benchmarks.md
#   CCTV_TEST_ARTIFACTS      if set, logs and drill.json are copied to $CCTV_TEST_ARTIFACTS/swarm-drill
set -uo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
export CCTV_STACK_BUILD=${CCTV_STACK_BUILD:-$ROOT/build/stack}
LOGDIR=$CCTV_STACK_BUILD/ci
mkdir -p "$LOGDIR"
T0=$SECONDS
STARTED_DOCKERD=""
CHILD=""
STATUS=1
PHASE=setup

say() { echo "[ci-drill $(date +%H:%M:%S) +$((SECONDS - T0))s] $*"; }

cleanup() {
    local rc=$STATUS
    trap - EXIT INT TERM
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        # the step runs in its own session: end it and everything it started
        kill -TERM -- "-$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    say "tearing down the testbed"
    if [ -x stack/testbed/testbed ] && /usr/bin/docker info >/dev/null 2>&1; then
        stack/testbed/testbed down >>"$LOGDIR/down.log" 2>&1 || say "WARNING: testbed down failed"
    fi
    rm -f "$CCTV_STACK_BUILD/testbed/images.tar"  # 700 MB, re-made in seconds
    if [ -n "${CCTV_TEST_ARTIFACTS:-}" ]; then
        mkdir -p "$CCTV_TEST_ARTIFACTS/swarm-drill"
        cp -f "$LOGDIR"/*.log "$CCTV_STACK_BUILD/testbed/drill.json" \
            "$CCTV_TEST_ARTIFACTS/swarm-drill/" 2>/dev/null || true
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        say "stopping the dockerd this stage started (pid $STARTED_DOCKERD)"
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    if [ "$rc" = 0 ]; then
        say "PASSED in $((SECONDS - T0)) s"
    else
        say "FAILED in phase '$PHASE' after $((SECONDS - T0)) s (logs: $LOGDIR)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; STATUS=130; exit 130' INT TERM

# Run a step in the background and wait for it, so that a TERM from CI's timeout reaches the
# trap at once (bash defers traps while a foreground child runs).
step() {  # step NAME LOGFILE cmd...
    local name=$1 logf=$2 rc; shift 2
    PHASE=$name
    say "$name"
    setsid "$@" > >(tee -a "$LOGDIR/$logf") 2>&1 &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=""
    if [ "$rc" != 0 ]; then
        say "$name failed (exit $rc)"
        STATUS=$rc
        [ "$rc" -gt 1 ] || STATUS=1
        exit "$STATUS"
    fi
}

# ---- host prerequisites --------------------------------------------------------------------
PHASE=prerequisites
[ "$(id -u)" = 0 ] || { say "needs root (apt-get, dockerd, debootstrap)"; exit 2; }
missing=()
# Debian's docker.io: /usr/bin/docker (the 20.10 client, with BuildKit) and /usr/sbin/dockerd
{ [ -x /usr/bin/docker ] && command -v dockerd >/dev/null; } || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >"$LOGDIR/apt.log" 2>&1 \
        || { tail -20 "$LOGDIR/apt.log"; say "apt-get failed"; exit 1; }
fi

if ! /usr/bin/docker info >/dev/null 2>&1; then
    say "starting dockerd"
    setsid "$(command -v dockerd)" >"$LOGDIR/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 1 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 1; done
    /usr/bin/docker info >/dev/null 2>&1 || { tail -20 "$LOGDIR/dockerd.log"; say "dockerd did not start"; exit 1; }
fi

# python for the wheelhouse (pip) and the drill (redis, opencv)
PY=${CCTV_STACK_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c "import redis, cv2" 2>/dev/null; then
        PY=$ROOT/.venv/bin/python
    else
        PY=$CCTV_STACK_BUILD/venv/bin/python
        if ! "$PY" -c "import redis, cv2" 2>/dev/null; then
            say "creating a venv for the drill ($CCTV_STACK_BUILD/venv)"
            if ! { python3 -m venv "$CCTV_STACK_BUILD/venv" \
                    && "$PY" -m pip install -q redis hiredis opencv-python-headless numpy; } \
                    >"$LOGDIR/venv.log" 2>&1; then
                tail -20 "$LOGDIR/venv.log"
                say "venv setup failed"
                exit 1
            fi
        fi
    fi
fi
export CCTV_STACK_PYTHON=$PY
export CCTV_SHARED=${CCTV_SHARED:-$ROOT/../shared}
[ -d "$CCTV_SHARED/models/yolov8n_int8_openvino_model" ] \
    || { say "models not found under CCTV_SHARED=$CCTV_SHARED"; exit 1; }

# ---- the stage -------------------------------------------------------------------------------
# shellcheck disable=SC2206
DRILL_ARGS=(${CCTV_STACK_DRILL_ARGS:---rounds 5 --stop-rounds 1 --update-rounds 1 --swarm-only-rounds 3})
[ "${CCTV_STACK_RECORD:-1}" = 1 ] && DRILL_ARGS+=(--record)

step "build images, start the 3-node swarm, deploy, wait until healthy" up.log \
    stack/testbed/testbed up
step "stream the sample clip (results, MJPEG, warm standby, frame accounting)" stream.log \
    stack/testbed/testbed stream 15
step "failover drill" drill.log stack/testbed/testbed drill "${DRILL_ARGS[@]}"
step "mixed-cluster override (no GPU here: the CPU replica leads)" mixed.log \
    stack/testbed/testbed mixed 10
PHASE=teardown
STATUS=0
