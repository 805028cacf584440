# Lean CPU inference image: the app image plus the OpenVINO runtime and an OpenVINO IR model.
# No torch, no ultralytics (those are ~6 GB): cctv's built-in OpenVINO detector runs an
# ultralytics-exported IR directly, and OpenVINO is the fastest CPU backend measured
# (docs/benchmarks.md). It tracks like the full image (cctv's ByteTrack needs numpy and lap).
# Every replica loads the model at start and waits as a warm standby.
# Only the CPU plugin and the IR reader of OpenVINO are kept (GPU/NPU plugins and the
# ONNX/TF/PyTorch/Paddle frontends are ~80 MB this image never uses).
#
# Built by stack/build on top of the app image, from the same staged context plus models/
# (the IR folder named by MODEL_DIR; models are never committed to the repository).
#   BASE_IMAGE   the app image built from docker/app.Dockerfile
#   MODEL_DIR    folder under the context's models/ baked into /models
ARG BASE_IMAGE=cctv-swarm/app:latest
FROM ${BASE_IMAGE}

USER 0:0
ARG PIP_NO_INDEX=1
RUN --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=bind,source=docker/constraints.txt,target=/src/constraints.txt \
    --mount=type=bind,source=docker/requirements-inference-cpu.txt,target=/src/requirements.txt \
    pip install --no-cache-dir --disable-pip-version-check \
        --find-links /wheels -c /src/constraints.txt -r /src/requirements.txt \
 && pip check \
 && ov=/opt/cctv/lib/python3.11/site-packages/openvino/libs \
 && find "$ov" \( -name 'libopenvino_intel_gpu_plugin.so' -o -name 'libopenvino_intel_npu_plugin.so' \
        -o -name 'cache.json' \
        -o \( -name 'libopenvino_*_frontend.so*' ! -name 'libopenvino_ir_frontend.so*' \) \) -delete \
 && python3 -c "import openvino as ov, cv2, numpy, yaml, lap; assert 'CPU' in ov.Core().available_devices"

ARG MODEL_DIR=yolov8n_int8_openvino_model
COPY models/${MODEL_DIR} /models/${MODEL_DIR}
ENV CCTV_MODEL=/models/${MODEL_DIR}

USER 10001:10001
EXPOSE 9100
# healthy once the model is loaded (leader or warm standby alike; see docker/healthcheck.py)
HEALTHCHECK --interval=5s --timeout=3s --start-period=90s --retries=6 \
    CMD ["cctv-healthcheck", "http://127.0.0.1:9100/readyz", "model_loaded"]
CMD ["inference"]
