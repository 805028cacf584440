"""The ``ultralytics`` backend: any model ultralytics loads (.pt, .onnx, OpenVINO folder,
TensorRT engine) on CUDA when present, else on the CPU. ``auto`` falls back to it for every
model no other backend takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cctv.inference.backends import Backend
from cctv.inference.detector import Detection, clip_box, resolve_device


class UltralyticsDetector:
    """A model run through ultralytics (any format it supports)."""

    backend = "ultralytics"

    def __init__(self, model: str, *, device: str, imgsz: int, conf: float, iou: float,
                 classes: tuple[int, ...]) -> None:
        from ultralytics import YOLO

        self.device = resolve_device(device)
        path = Path(model)
        self.model_name = path.name
        self._yolo = YOLO(model, task="detect")
        self._names: dict[int, str] = dict(self._yolo.names)
        #: class id -> name, as the model says
        self.names: dict[int, str] = dict(self._names)
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
                                  clip_box(b, w, h)) for b, p, c in zip(xyxy, confs, clss,
                                                                         strict=True)])
        return out



def _has_ultralytics() -> bool:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return False
    return True



def _missing(model: str) -> str | None:
    if _has_ultralytics():
        return None
    return (f"CCTV_MODEL={model} needs ultralytics, which is not installed in this image; "
            "use an OpenVINO model folder or the full inference image")


def _load(model: str, *, device: str, imgsz: int, conf: float, iou: float,
          classes: tuple[int, ...], batch: int = 1) -> UltralyticsDetector:
    # batch: ultralytics batches a .pt on a GPU by itself; exported models are batch 1
    return UltralyticsDetector(model, device=device, imgsz=imgsz, conf=conf, iou=iou,
                               classes=classes)


BACKEND = Backend("ultralytics", _load, accepts=lambda path, on_gpu: True, priority=0,
                  missing=_missing)
