# GPU inference image: cctv on ultralytics + CUDA torch, for workers with an NVIDIA GPU, the
# NVIDIA container runtime as Docker's default runtime, and the GPU advertised to Swarm as a
# generic resource (docs/deploy.md; docker-stack.gpu.yml selects this image and reserves it).
#
#   stack/build --gpu          (context staged like the other images; pip reaches the index
#                               unless the wheelhouse already holds everything)
#   BASE_IMAGE   a CUDA base with Python >= 3.11 (default: CUDA 13 on Ubuntu 24.04, Python 3.12).
#                torch brings its own CUDA libraries; the base provides the NVIDIA_* settings
#                the container runtime reads to inject the driver.
#   PIP_NO_INDEX 0 (default) lets pip download torch (~3 GB) at build time; 1 = wheelhouse only
#   MODEL_DIR    weights baked into /models (a .pt file or an exported folder)
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    YOLO_OFFLINE=1 \
    PATH=/opt/cctv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --system --gid 10001 cctv \
 && useradd --system --uid 10001 --gid cctv --home-dir /nonexistent --shell /usr/sbin/nologin cctv \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} +

ARG PIP_NO_INDEX=0
ARG PIP_EXTRA_INDEX_URL
RUN --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=bind,source=docker/constraints.txt,target=/src/constraints.txt \
    --mount=type=bind,source=docker/requirements-inference-gpu.txt,target=/src/requirements.txt \
    python3 -m venv /opt/cctv \
 && /opt/cctv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --find-links /wheels -c /src/constraints.txt -r /src/requirements.txt
RUN --mount=type=bind,source=dist,target=/dist \
    pip install --no-cache-dir --disable-pip-version-check --no-deps /dist/cctv_swarm-*.whl \
 && pip check \
 && python3 -c "import torch, ultralytics, cctv.inference.detector"

COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/cctv-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/cctv-entrypoint
ARG MODEL_DIR=yolov8n_int8recon.pt
COPY models/${MODEL_DIR} /models/${MODEL_DIR}
ENV CCTV_MODEL=/models/${MODEL_DIR} \
    CCTV_DEVICE=auto

USER 10001:10001
WORKDIR /tmp
EXPOSE 9100
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=6 \
    CMD ["cctv-healthcheck", "http://127.0.0.1:9100/readyz", "model_loaded"]
ENTRYPOINT ["cctv-entrypoint"]
CMD ["inference"]
