"""Object detectors behind one small interface.

The backends live in inference/backends/, one module each (``openvino``: an OpenVINO IR on
the OpenVINO runtime without torch; ``ultralytics``: any model ultralytics loads).
``load_detector`` picks the backend from the model path, the settings and what is installed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cctv.inference import backends

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


def clip_box(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    """``box`` (x1, y1, x2, y2) clipped to a ``w`` x ``h`` frame, as ints."""
    x1, y1, x2, y2 = box
    return (int(max(0, min(w - 1, x1))), int(max(0, min(h - 1, y1))),
            int(max(0, min(w - 1, x2))), int(max(0, min(h - 1, y2))))


def resolve_device(device: str) -> str:
    """``auto`` -> ``"0"`` when torch sees CUDA, else ``"cpu"``; ``cuda:N`` -> ``"N"``."""
    if device != "auto":
        return device.removeprefix("cuda:")
    try:
        import torch

        return "0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_detector(model: str, *, device: str = "auto", imgsz: int = 640, conf: float = 0.25,
                  iou: float = 0.7, classes: tuple[int, ...] = (), backend: str = "auto",
                  warmup: bool = True, batch: int = 1) -> Detector:
    """Load ``model`` with the best backend and run one warm-up inference.

    ``backend``: ``auto`` (an OpenVINO dir runs on the OpenVINO runtime on CPU, anything else
    through ultralytics) or the key of a registered backend (inference/backends/:
    ``openvino``, ``ultralytics``, ...).
    """
    if not model:
        raise ModelLoadError("CCTV_MODEL is not set: give a .pt, .onnx or OpenVINO model folder")
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"CCTV_MODEL={model}: no such file or folder")
    if backend == "auto":
        chosen = _auto_backend(model, path, device)
        why = chosen.missing(model) if chosen.missing else None
        if why:
            raise ModelLoadError(why)
    else:
        try:
            chosen = backends.backend(backend)
        except KeyError as exc:
            raise ModelLoadError(f"CCTV_INFERENCE_BACKEND={backend}: {exc.args[0]}") from None
    started = time.perf_counter()
    det: Detector
    try:
        # batch (frames per model call) only when asked for: a backend may not take it
        extra = {"batch": batch} if batch > 1 else {}
        det = chosen.load(model, device=device, imgsz=imgsz, conf=conf, iou=iou,
                          classes=classes, **extra)
        if warmup:
            det.detect([np.zeros((480, 640, 3), dtype=np.uint8)])
    except ModelLoadError:
        raise
    except Exception as exc:  # any loader error becomes one clear message
        raise ModelLoadError(f"CCTV_MODEL={model}: cannot load with {chosen.key}: {exc}") from exc
    log.info("model %s loaded with %s on %s in %.2fs", det.model_name, det.backend, det.device,
             time.perf_counter() - started)
    return det


def _auto_backend(model: str, path: Path, device: str) -> backends.Backend:
    """The registered backend with the highest priority that takes ``path`` on ``device``."""
    on_gpu = device not in ("auto", "cpu") or (device == "auto" and resolve_device("auto")
                                               != "cpu")
    candidates = [b for b in backends.backends().values()
                  if b.accepts is not None and b.accepts(path, on_gpu)]
    if not candidates:
        raise ModelLoadError(f"CCTV_MODEL={model}: no inference backend takes this model; "
                             f"known: {', '.join(sorted(backends.backends()))}")
    return max(candidates, key=lambda b: b.priority)
