"""Object detectors behind one small interface.

* :class:`UltralyticsDetector` runs any model ultralytics loads (.pt, .onnx, OpenVINO dir,
  TensorRT engine) on CUDA when present, else on the CPU.
* :class:`OpenVinoDetector` runs an ultralytics-exported OpenVINO IR directly on the OpenVINO
  runtime, without torch or ultralytics: the lean CPU image uses it (about 300 MB instead of
  several GB) and it is the faster CPU path (docs/benchmarks.md).

``load_detector`` picks the backend from the model path, the settings and what is installed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("cctv.inference.detector")


@dataclass(frozen=True)
class Detection:
    """One detected object, in pixels of the original frame."""

    cls: int
    name: str
    conf: float
    xyxy: tuple[int, int, int, int]
    #: tracker id (inference/tracking.py); None when untracked or not yet confirmed
    track: int | None = None

    def to_json(self) -> dict:
        out = {"cls": self.cls, "name": self.name, "conf": round(self.conf, 3),
               "xyxy": list(self.xyxy)}
        if self.track is not None:
            out["track"] = self.track
        return out


class Detector(Protocol):
    """Runs a detection model on decoded BGR frames."""

    backend: str
    model_name: str
    device: str

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detections for each frame, in the same order."""
        ...


@dataclass(frozen=True)
class Prepared:
    """A frame already letterboxed into the model's input blob (see ``prepare``)."""

    frame: np.ndarray
    blob: np.ndarray
    scale: float
    left: int
    top: int


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to set."""


def _clip_box(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (int(max(0, min(w - 1, x1))), int(max(0, min(h - 1, y1))),
            int(max(0, min(w - 1, x2))), int(max(0, min(h - 1, y2))))


class UltralyticsDetector:
    """A model run through ultralytics (any format it supports)."""

    backend = "ultralytics"

    def __init__(self, model: str, *, device: str, imgsz: int, conf: float, iou: float,
                 classes: tuple[int, ...]) -> None:
        from ultralytics import YOLO

        self.device = _resolve_device(device)
        path = Path(model)
        self.model_name = path.name
        self._yolo = YOLO(model, task="detect")
        self._names: dict[int, str] = dict(self._yolo.names)
        self._kw = {"imgsz": imgsz, "conf": conf, "iou": iou, "verbose": False,
                    "device": self.device, "classes": list(classes) or None}
        if self.device != "cpu" and path.suffix == ".pt":
            self._kw["half"] = True
        # Exported models (onnx/openvino) are static batch 1 unless exported dynamic.
        self._batch = path.suffix == ".pt" and self.device != "cpu"

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        if self._batch:
            results = self._yolo.predict(frames, **self._kw)
        else:
            results = [self._yolo.predict(f, **self._kw)[0] for f in frames]
        out = []
        for frame, res in zip(frames, results, strict=True):
            h, w = frame.shape[:2]
            boxes = res.boxes
            xyxy = boxes.xyxy.cpu().numpy()
            confs = boxes.conf.cpu().numpy()
            clss = boxes.cls.cpu().numpy().astype(int)
            out.append([Detection(int(c), self._names.get(int(c), str(c)), float(p),
                                  _clip_box(b, w, h)) for b, p, c in zip(xyxy, confs, clss,
                                                                         strict=True)])
        return out


class OpenVinoDetector:
    """An ultralytics-exported OpenVINO IR run on the OpenVINO runtime (no torch)."""

    backend = "openvino"
    device = "cpu"

    def __init__(self, model_dir: str, *, imgsz: int, conf: float, iou: float,
                 classes: tuple[int, ...]) -> None:
        import openvino as ov

        path = Path(model_dir)
        xmls = sorted(path.glob("*.xml"))
        if not xmls:
            raise ModelLoadError(f"CCTV_MODEL={model_dir}: no OpenVINO .xml file in that folder")
        self.model_name = path.name
        self._names = _read_names(path / "metadata.yaml")
        core = ov.Core()
        model = core.read_model(str(xmls[0]))
        shape = model.inputs[0].get_partial_shape()
        static = shape.is_static
        self.imgsz = int(shape[2].get_length()) if static else imgsz
        model = _with_preprocessing(model)
        self._compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
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

    def _one(self, item: np.ndarray | Prepared) -> list[Detection]:
        import cv2

        prep = item if isinstance(item, Prepared) else self.prepare(item)
        frame, blob, scale, left, top = prep.frame, prep.blob, prep.scale, prep.left, prep.top
        pred = self._request.infer({0: blob})[self._compiled.outputs[0]][0]  # (4+nc, anchors)
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
                                 _clip_box(box, w, h)))
        out.sort(key=lambda d: -d.conf)
        return out

    def detect(self, frames: list[np.ndarray | Prepared]) -> list[list[Detection]]:
        return [self._one(f) for f in frames]


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


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device.removeprefix("cuda:")
    try:
        import torch

        return "0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _has_ultralytics() -> bool:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return False
    return True


def load_detector(model: str, *, device: str = "auto", imgsz: int = 640, conf: float = 0.25,
                  iou: float = 0.7, classes: tuple[int, ...] = (), backend: str = "auto",
                  warmup: bool = True) -> Detector:
    """Load ``model`` with the best backend and run one warm-up inference.

    ``backend``: ``auto`` (an OpenVINO dir runs on the OpenVINO runtime on CPU, anything else
    through ultralytics), ``openvino`` or ``ultralytics``.
    """
    if not model:
        raise ModelLoadError("CCTV_MODEL is not set: give a .pt, .onnx or OpenVINO model folder")
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"CCTV_MODEL={model}: no such file or folder")
    is_ov_dir = path.is_dir() and any(path.glob("*.xml"))
    chosen = backend
    if backend == "auto":
        on_gpu = device not in ("auto", "cpu") or (device == "auto" and _resolve_device("auto")
                                                   != "cpu")
        chosen = "openvino" if is_ov_dir and not on_gpu else "ultralytics"
        if chosen == "ultralytics" and not _has_ultralytics():
            raise ModelLoadError(
                f"CCTV_MODEL={model} needs ultralytics, which is not installed in this image; "
                "use an OpenVINO model folder or the full inference image")
    started = time.perf_counter()
    det: Detector
    try:
        if chosen == "openvino":
            if not is_ov_dir:
                raise ModelLoadError(f"CCTV_MODEL={model}: the openvino backend needs an "
                                     "OpenVINO model folder (with .xml and .bin)")
            det = OpenVinoDetector(model, imgsz=imgsz, conf=conf, iou=iou, classes=classes)
        else:
            det = UltralyticsDetector(model, device=device, imgsz=imgsz, conf=conf, iou=iou,
                                      classes=classes)
        if warmup:
            det.detect([np.zeros((480, 640, 3), dtype=np.uint8)])
    except ModelLoadError:
        raise
    except Exception as exc:  # any loader error becomes one clear message
        raise ModelLoadError(f"CCTV_MODEL={model}: cannot load with {chosen}: {exc}") from exc
    log.info("model %s loaded with %s on %s in %.2fs", det.model_name, det.backend, det.device,
             time.perf_counter() - started)
    return det
