# A Swarm node for the local testbed: Debian's Docker engine inside a container
# (docker-in-docker). Runs without --privileged, with the capabilities listed in stack/testbed/up.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        docker.io iptables iproute2 procps ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

COPY --chmod=0755 node-entrypoint.sh /usr/local/bin/node-entrypoint
VOLUME ["/var/lib/docker"]
HEALTHCHECK --interval=2s --timeout=2s --retries=30 CMD ["docker", "info"]
ENTRYPOINT ["node-entrypoint"]
