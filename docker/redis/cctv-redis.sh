#!/bin/sh
# Start one Redis server or Sentinel of the replicated stack. Passwords come from Docker secrets
# and go into a config file of the container's own, never onto a command line.
#
#   cctv-redis.sh server     a Redis server: replica of the current primary (asked from the
#                            Sentinels), or the first primary when no Sentinel knows one yet
#   cctv-redis.sh sentinel   a Sentinel monitoring the primary as "cctv"
#
# Environment (all but the first have defaults):
#   REDIS_ANNOUNCE_HOST   this node's address as the others reach it (e.g. redis-1)
#   REDIS_PRIMARY_HOST    the primary at the very first start (e.g. redis-1)
#   REDIS_SENTINELS       "host:port host:port ..." asked for the current primary at start
#   REDIS_MIN_REPLICAS    min-replicas-to-write (1: an isolated primary refuses writes)
#   REDIS_MAX_LAG_S       min-replicas-max-lag
#   REDIS_MAXMEMORY       maxmemory (noeviction)
#   SENTINEL_QUORUM, SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS
#   REDIS_PORT (6379), REDIS_PRIMARY_PORT (= REDIS_PORT), SENTINEL_PORT (26379),
#   REDIS_DATA_DIR (/data), CCTV_REDIS_SECRETS_DIR (/run/secrets)
# Secrets: /run/secrets/cctv_redis_acl (written by `cctv redis-acl`),
#   /run/secrets/cctv_redis_pw_replication, /run/secrets/cctv_redis_pw_sentinel
set -eu
mode=${1:?usage: cctv-redis.sh server|sentinel}
: "${REDIS_ANNOUNCE_HOST:?set REDIS_ANNOUNCE_HOST}"
primary=${REDIS_PRIMARY_HOST:-$REDIS_ANNOUNCE_HOST}
secrets=${CCTV_REDIS_SECRETS_DIR:-/run/secrets}
master=cctv
port=${REDIS_PORT:-6379}
data=${REDIS_DATA_DIR:-/data}
primary_port=${REDIS_PRIMARY_PORT:-$port}

# the primary the Sentinels agree on now (empty when none answers: the very first start)
current_primary() {
  for s in ${REDIS_SENTINELS:-}; do
    host=${s%:*}; sport=${s##*:}
    addr=$(redis-cli -h "$host" -p "$sport" --raw SENTINEL get-master-addr-by-name "$master" \
           2>/dev/null | tr '\n' ' ') || true
    set -- $addr
    if [ $# -eq 2 ]; then echo "$1"; primary_port=$2; return; fi
  done
}

conf=$data/$mode.conf
case "$mode" in
server)
  current_primary > "$data/.primary" || true
  known=$(cat "$data/.primary")
  [ -n "$known" ] && primary=$known
  {
    echo "aclfile $secrets/cctv_redis_acl"
    echo "masteruser replication"
    echo "masterauth $(cat "$secrets/cctv_redis_pw_replication")"
    echo "min-replicas-to-write ${REDIS_MIN_REPLICAS:-1}"
    echo "min-replicas-max-lag ${REDIS_MAX_LAG_S:-2}"
    echo "replica-announce-ip $REDIS_ANNOUNCE_HOST"
    echo "appendonly yes"
    echo "appendfsync everysec"
    echo "dir $data"
    echo "port $port"
    echo "protected-mode no"
    [ -n "${REDIS_MAXMEMORY:-}" ] && echo "maxmemory $REDIS_MAXMEMORY"
    echo "maxmemory-policy noeviction"
    if [ "$primary" != "$REDIS_ANNOUNCE_HOST" ]; then echo "replicaof $primary $primary_port"; fi
  } > "$conf"
  chmod 600 "$conf"
  exec redis-server "$conf"
  ;;
sentinel)
  if [ ! -s "$conf" ]; then  # Sentinel rewrites its file: keep what it learnt across restarts
    current_primary > "$data/.primary" || true
    known=$(cat "$data/.primary")
    [ -n "$known" ] && primary=$known
    {
      echo "port ${SENTINEL_PORT:-26379}"
      echo "dir $data"
      echo "sentinel resolve-hostnames yes"
      echo "sentinel announce-hostnames yes"
      echo "sentinel announce-ip $REDIS_ANNOUNCE_HOST"
      echo "sentinel monitor $master $primary $primary_port ${SENTINEL_QUORUM:-2}"
      echo "sentinel auth-user $master sentinel"
      echo "sentinel auth-pass $master $(cat "$secrets/cctv_redis_pw_sentinel")"
      echo "sentinel down-after-milliseconds $master ${SENTINEL_DOWN_AFTER_MS:-5000}"
      echo "sentinel failover-timeout $master ${SENTINEL_FAILOVER_TIMEOUT_MS:-60000}"
      echo "sentinel parallel-syncs $master 1"
    } > "$conf"
    chmod 600 "$conf"
  fi
  exec redis-server "$conf" --sentinel
  ;;
*) echo "cctv-redis.sh: unknown mode $mode (server or sentinel)" >&2; exit 2 ;;
esac
