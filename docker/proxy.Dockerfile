# The proxy in front of ingest (:8080) and web (:8000): Debian's nginx, which reads every request
# completely (bounded in size and time) before it reaches gunicorn, so slow or stalled clients
# cannot hold the services' threads (docs/architecture.md, "Slow clients").
#
# Built by stack/build from the staged context (docker/ only is used here).
#   BASE_IMAGE   any Debian bookworm image (public: debian:bookworm-slim; the testbed imports
#                a debootstrap rootfs as local/debian:bookworm)
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive

# nginx; curl for the HEALTHCHECK; the same fixed non-root user (uid 10001) as the services
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --system --gid 10001 cctv \
 && useradd --system --uid 10001 --gid cctv --home-dir /nonexistent --shell /usr/sbin/nologin cctv \
 && install -d -o 10001 -g 10001 /tmp/nginx \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} +

COPY docker/proxy/nginx.conf.template /etc/nginx-cctv/nginx.conf.template
COPY --chmod=0755 docker/proxy/entrypoint.sh /usr/local/bin/cctv-proxy

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8000
# https or http as the entrypoint chose (-k: the certificate names the nodes, not 127.0.0.1)
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "curl -fsSk -m 3 -o /dev/null \"$(cat /tmp/nginx/health-url)\""]
ENTRYPOINT ["cctv-proxy"]
