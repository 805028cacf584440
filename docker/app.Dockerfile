# ingest + web image: `cctv ingest` (default, :8080) and `cctv web` (:8000); also `cctv events`,
# `cctv swarmwatch` and `cctv capture` (with the sender package: its camera sources).
#
# Built by stack/build from a staged context (build/stack/context):
#   docker/   this folder
#   wheels/   wheelhouse made on the host: the pinned dependencies of docker/constraints.txt
#   dist/     the cctv-swarm wheel built from this checkout
# Installing with --no-index keeps the build offline and reproducible (pip inside the build
# cannot reach an index on every network; the host's pip can).
#   BASE_IMAGE   any Debian bookworm image (public: debian:bookworm-slim; the testbed imports
#                a debootstrap rootfs as local/debian:bookworm because nothing can be pulled)
#   PIP_NO_INDEX 1 = wheelhouse only (default); 0 = let pip fall back to the index
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/cctv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Debian's Python 3.11 and venv; a fixed non-root user (uid 10001) for every service; no
# setuid/setgid binaries left (the stack cannot set no-new-privileges: docs/security.md).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --system --gid 10001 cctv \
 && useradd --system --uid 10001 --gid cctv --home-dir /nonexistent --shell /usr/sbin/nologin cctv \
 && install -d -o 10001 -g 10001 /var/lib/cctv/events \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} +

# Dependencies first (a layer that survives code changes), then the cctv wheel itself;
# `pip check` fails the build when the package needs a dependency the list above lacks.
ARG PIP_NO_INDEX=1
RUN --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=bind,source=docker/constraints.txt,target=/src/constraints.txt \
    --mount=type=bind,source=docker/requirements-app.txt,target=/src/requirements.txt \
    python3 -m venv /opt/cctv \
 && /opt/cctv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --find-links /wheels -c /src/constraints.txt -r /src/requirements.txt
RUN --mount=type=bind,source=dist,target=/dist \
    pip install --no-cache-dir --disable-pip-version-check --no-deps /dist/cctv_swarm-*.whl \
        /dist/cctv_sender-*.whl \
 && pip check \
 && cctv --help >/dev/null

COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/cctv-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/cctv-entrypoint

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8000
# ingest by default; the stack sets the probe URL of `cctv web` (:8000/healthz).
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
    CMD ["cctv-healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["cctv-entrypoint"]
CMD ["ingest"]
