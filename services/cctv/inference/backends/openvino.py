"""The ``openvino`` backend: an ultralytics-exported OpenVINO IR run directly on the OpenVINO
runtime, without torch or ultralytics. The lean CPU image uses it (about 300 MB instead of
several GB) and it is the faster CPU path (docs/benchmarks.md); ``auto`` picks it for an
OpenVINO model folder when the model runs on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cctv.inference.backends import Backend
from cctv.inference.detector import Detection, ModelLoadError, Prepared, clip_box


class OpenVinoDetector:
    """An ultralytics-exported OpenVINO IR run on the OpenVINO runtime (no torch)."""

    backend = "openvino"
    device = "cpu"

    def __init__(self, model_dir: str, *, imgsz: int, conf: float, iou: float,
                 classes: tuple[int, ...], batch: int = 1) -> None:
        import openvino as ov

        path = Path(model_dir)
        xmls = sorted(path.glob("*.xml"))
        if not xmls:
            raise ModelLoadError(f"CCTV_MODEL={model_dir}: no OpenVINO .xml file in that folder")
        self.model_name = path.name
        self._names = _read_names(path / "metadata.yaml")
        #: class id -> name, as the model's metadata says
        self.names: dict[int, str] = dict(self._names)
        core = ov.Core()
        model = core.read_model(str(xmls[0]))
        shape = model.inputs[0].get_partial_shape()
        static = shape.is_static
        self.imgsz = int(shape[2].get_length()) if static else imgsz
        self._compiled = core.compile_model(_with_preprocessing(model), "CPU",
                                            {"PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
        #: frames run at once per call (CCTV_INFERENCE_BATCH): several cameras' newest frames
        #: go through a second copy of the model side by side
        self.batch = max(1, batch)
        self._batched = self._batched_request(core, xmls[0], batch) if batch > 1 else None
        self._conf, self._iou = conf, iou
        self._classes = np.array(classes, dtype=int) if classes else None

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        import cv2

        h, w = frame.shape[:2]
        size = self.imgsz
        scale = min(size / h, size / w)
        nh, nw = round(h * scale), round(w * scale)
        top, left = (size - nh) // 2, (size - nw) // 2
        resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = cv2.copyMakeBorder(resized, top, size - nh - top, left, size - nw - left,
                                    cv2.BORDER_CONSTANT, value=(114, 114, 114))
        blob = canvas[None]  # uint8 NHWC BGR: the model converts it (_with_preprocessing)
        return blob, scale, left, top

    def prepare(self, frame: np.ndarray) -> Prepared:
        """Letterbox ``frame`` into the input blob. Thread-safe: the leader's prefetch thread
        calls it while the model runs on the previous frame."""
        return Prepared(frame, *self._letterbox(frame))

    def _batched_request(self, core: Any, xml: Path, batch: int) -> Any:
        """``batch`` infer requests of a second copy of the model compiled for throughput
        (one CPU stream per request): the frames of one call run side by side. (An exported
        IR has its batch dimension fixed in its reshapes, so frames cannot be stacked.)"""
        import openvino as ov

        compiled = core.compile_model(_with_preprocessing(core.read_model(str(xml))), "CPU",
                                      {"PERFORMANCE_HINT": "THROUGHPUT",
                                       "NUM_STREAMS": str(batch)})
        self._batched_output = compiled.outputs[0]
        return ov.AsyncInferQueue(compiled, batch)

    def detect(self, frames: list[np.ndarray | Prepared]) -> list[list[Detection]]:
        """Detections of each frame: one model call per frame, or with CCTV_INFERENCE_BATCH
        > 1 the frames of a call run side by side, up to that many at once."""
        if self._batched is None or len(frames) < 2:
            return [self._one(f) for f in frames]
        preps = [f if isinstance(f, Prepared) else self.prepare(f) for f in frames]
        preds: list[np.ndarray | None] = [None] * len(preps)

        def done(request: Any, index: int) -> None:
            preds[index] = request.get_output_tensor(self._batched_output.index).data[0].copy()

        self._batched.set_callback(done)
        for i, p in enumerate(preps):
            self._batched.start_async({0: p.blob}, i)
        self._batched.wait_all()
        return [self._post(p, pred) for p, pred in zip(preps, preds, strict=True)]

    def _one(self, item: np.ndarray | Prepared) -> list[Detection]:
        prep = item if isinstance(item, Prepared) else self.prepare(item)
        pred = self._request.infer({0: prep.blob})[self._compiled.outputs[0]][0]
        return self._post(prep, pred)

    def _post(self, prep: Prepared, pred: np.ndarray) -> list[Detection]:
        """Detections of one frame from its model output (4 + classes, anchors)."""
        import cv2

        frame, scale, left, top = prep.frame, prep.scale, prep.left, prep.top
        scores = pred[4:]  # (nc, anchors): reduce over classes without transposing
        conf = scores.max(0)
        keep = conf >= self._conf
        if not keep.any():
            return []
        cls = scores[:, keep].argmax(0)
        conf = conf[keep]
        boxes = pred[:4, keep].T
        if self._classes is not None:
            wanted = np.isin(cls, self._classes)
            boxes, conf, cls = boxes[wanted], conf[wanted], cls[wanted]
            if not len(cls):
                return []
        xywh = boxes.copy()
        xywh[:, 0] -= xywh[:, 2] / 2
        xywh[:, 1] -= xywh[:, 3] / 2
        idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), cls.tolist(),
                                      self._conf, self._iou)
        idx = np.array(idx, dtype=int).reshape(-1)[:300]
        h, w = frame.shape[:2]
        out = []
        for i in idx:
            x, y, bw, bh = xywh[i]
            box = np.array([(x - left) / scale, (y - top) / scale,
                            (x + bw - left) / scale, (y + bh - top) / scale])
            c = int(cls[i])
            out.append(Detection(c, self._names.get(c, str(c)), float(conf[i]),
                                 clip_box(box, w, h)))
        out.sort(key=lambda d: -d.conf)
        return out


def _with_preprocessing(model: Any) -> Any:
    """Fold uint8 BGR NHWC → float RGB NCHW / 255 into the model, so that it runs on
    OpenVINO's threads instead of as a numpy step before every call."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
        .set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .convert_color(ColorFormat.RGB).scale(255.0)
    return ppp.build()

def _read_names(metadata: Path) -> dict[int, str]:
    if not metadata.exists():
        return {}
    import yaml

    data = yaml.safe_load(metadata.read_text()) or {}
    return {int(k): str(v) for k, v in (data.get("names") or {}).items()}

def _is_ov_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.xml"))

def _load(model: str, *, device: str, imgsz: int, conf: float, iou: float,
          classes: tuple[int, ...], batch: int = 1) -> OpenVinoDetector:
    if not _is_ov_dir(Path(model)):
        raise ModelLoadError(f"CCTV_MODEL={model}: the openvino backend needs an "
                             "OpenVINO model folder (with .xml and .bin)")
    return OpenVinoDetector(model, imgsz=imgsz, conf=conf, iou=iou, classes=classes,
                            batch=batch)

BACKEND = Backend("openvino", _load, accepts=lambda path, on_gpu: _is_ov_dir(path) and not on_gpu,
                  priority=10)
