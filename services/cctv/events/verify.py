"""Two-stage verification: a second model looks at an event's crop before the event counts.

Any model ultralytics loads can verify: a classifier confirms when its top class is one of the
rule's ``classes`` (any class when none are given) with probability >= ``threshold``; a detector
(or segmenter, pose model...) confirms when it finds one of the ``classes`` in the crop with
confidence >= ``threshold``. Models are loaded once at start and shared between rules.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from cctv.events.config import Verify

log = logging.getLogger("cctv.events.verify")


class VerifierError(RuntimeError):
    """The verifier model cannot be loaded or its classes do not exist in it."""


@dataclass(frozen=True)
class Verdict:
    """A verifier's answer for one crop."""

    confirmed: bool
    label: str
    score: float
    ms: float

    def summary(self) -> str:
        return f"{'confirmed' if self.confirmed else 'rejected'}: {self.label} {self.score:.2f}"


class Verifier:
    """One loaded verifier model with one rule's classes and threshold."""

    def __init__(self, cfg: Verify, model: object) -> None:
        self.cfg = cfg
        self.model = model
        names: dict[int, str] = dict(model.names)  # type: ignore[attr-defined]
        self.task = str(getattr(model, "task", "detect"))
        by_name = {v: k for k, v in names.items()}
        ids = []
        for c in cfg.classes:
            if isinstance(c, int):
                if c not in names:
                    raise VerifierError(f"verify.classes: the model {cfg.model} has no class id "
                                        f"{c} (it has 0..{max(names)})")
                ids.append(c)
            elif c in by_name:
                ids.append(by_name[c])
            else:
                raise VerifierError(f"verify.classes: the model {cfg.model} has no class {c!r}")
        self.class_ids = ids
        self.names = names

    def check(self, crop: np.ndarray) -> Verdict:
        """Confirm or reject one crop (BGR)."""
        started = time.perf_counter()
        with _PREDICT_LOCK:  # ultralytics predictors are not thread-safe
            if self.task == "classify":
                res = self.model.predict(crop, imgsz=self.cfg.imgsz, verbose=False)[0]
                top = int(res.probs.top1)
                score = float(res.probs.top1conf)
                ok = (not self.class_ids or top in self.class_ids) and score >= self.cfg.threshold
                label = self.names.get(top, str(top))
            else:
                res = self.model.predict(crop, imgsz=self.cfg.imgsz, verbose=False,
                                         conf=min(0.05, self.cfg.threshold),
                                         classes=self.class_ids or None)[0]
                confs = res.boxes.conf.cpu().numpy() if res.boxes is not None else []
                clss = res.boxes.cls.cpu().numpy().astype(int) if res.boxes is not None else []
                if len(confs):
                    i = int(np.argmax(confs))
                    score, label = float(confs[i]), self.names.get(int(clss[i]), str(clss[i]))
                else:
                    score, label = 0.0, "nothing"
                ok = score >= self.cfg.threshold
        return Verdict(ok, label, score, (time.perf_counter() - started) * 1000)


_MODELS: dict[tuple[str, int], object] = {}
_PREDICT_LOCK = threading.Lock()


def load_verifier(cfg: Verify) -> Verifier:
    """A verifier for ``cfg``, loading (once) and warming its model."""
    key = (cfg.model, cfg.imgsz)
    model = _MODELS.get(key)
    if model is None:
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise VerifierError("verification needs ultralytics (the full inference image); "
                                f"it is not installed here: {exc}") from None
        started = time.perf_counter()
        try:
            model = YOLO(cfg.model)
            model.predict(np.zeros((cfg.imgsz, cfg.imgsz, 3), np.uint8), imgsz=cfg.imgsz,
                          verbose=False)
        except Exception as exc:  # any loader error becomes one clear message
            raise VerifierError(f"verify.model {cfg.model}: cannot load: {exc}") from exc
        log.info("verifier %s (%s) loaded in %.1f s", cfg.model, getattr(model, "task", "?"),
                 time.perf_counter() - started)
        _MODELS[key] = model
    return Verifier(cfg, model)


def crop_box(image: np.ndarray, xyxy: list[int], padding: float) -> np.ndarray:
    """The box cut out of ``image`` with ``padding`` (a fraction of the box size) around it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = xyxy
    px, py = (x2 - x1) * padding, (y2 - y1) * padding
    x1, y1 = max(0, int(x1 - px)), max(0, int(y1 - py))
    x2, y2 = min(w, int(x2 + px) + 1), min(h, int(y2 + py) + 1)
    if x2 <= x1 or y2 <= y1:
        return image[0:1, 0:1].copy()
    return image[y1:y2, x1:x2].copy()
