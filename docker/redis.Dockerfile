# Redis from Debian (7.0), for clusters that cannot pull the official image (the testbed builds it
# from a local base). Anywhere else the stack's default, the official redis:7.2-bookworm, is fine:
# the stack passes the same redis-server command line to either.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# a fixed uid/gid (999, as in the official image) for the redis user the package would create
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /data && chown redis:redis /data \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} +

# the replicated stack's start script (docs/configuration.md, "Redis"); with the official image
# the stack mounts the same file as a config (executable in git: COPY keeps the mode)
COPY docker/redis/cctv-redis.sh /usr/local/bin/cctv-redis.sh

USER 999:999
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["redis-cli", "ping"]
CMD ["redis-server", "--appendonly", "yes", "--dir", "/data", "--protected-mode", "no"]
