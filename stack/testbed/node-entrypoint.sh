#!/bin/sh
# PID 1's child in a testbed node: make cgroups writable, clear what a killed daemon left,
# then run dockerd in the foreground (SIGTERM from `docker stop` shuts it down cleanly, which
# stops its containers with their own grace periods).
#   NODE_DNS   nameserver for the inner daemon's containers (the host's, never a public one)
#   NODE_DOCKERD_ARGS  extra dockerd flags
set -eu

# /sys is read-only in an unprivileged container; cgroup v1 hierarchies are mounted read-only
# and scoped to this container: remount each one whole and writable for the inner daemon.
mount -o remount,rw /sys
for h in cpu cpuacct cpuset memory devices freezer blkio pids systemd; do
    d=/sys/fs/cgroup/$h
    [ -d "$d" ] || continue
    umount "$d" 2>/dev/null || true
    if [ "$h" = systemd ]; then opts=none,name=systemd; else opts=$h; fi
    mount -t cgroup -o "$opts" cgroup "$d"
done

# after `docker kill` of this node and `docker start`, stale state would stop dockerd starting
rm -rf /var/run/docker.pid /var/run/docker /run/containerd /var/run/docker.sock

# 127.0.0.11 (the outer daemon's embedded DNS) is unreachable from inner containers, and
# without --dns the inner daemon falls back to public resolvers: insist on the host's.
dns=${NODE_DNS:?NODE_DNS must be the host nameserver}
# shellcheck disable=SC2086  # NODE_DOCKERD_ARGS is a word list
exec dockerd --cgroup-parent="/dind-$(hostname)" --dns="$dns" \
    --log-level=warn --storage-driver=overlay2 ${NODE_DOCKERD_ARGS:-}
