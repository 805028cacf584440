"""The inference replicas' settings section: the model, the leadership role, the tracker."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cctv.core.settings import Bad, CoreSettings, require_bind, require_positive
from cctv.inference.classes import ClassesError, parse_classes
from cctv.inference.shards import MAX_SHARDS


@dataclass(frozen=True)
class InferenceSettings(CoreSettings):
    """What ``cctv inference`` reads besides :class:`CoreSettings`. Field ``x`` is read from
    ``CCTV_X``."""

    model: str = ""
    device: str = "auto"
    # auto or a backend key of inference/backends/ (openvino, ultralytics, ...)
    inference_backend: str = "auto"
    imgsz: int = 640
    # the most frames (of different cameras) one model call takes; 1 = a call per frame
    inference_batch: int = 1
    conf: float = 0.25
    iou: float = 0.7
    # the classes kept: cctv (people, vehicles, animals), all, or names/ids (inference/classes.py)
    classes: str = "cctv"
    max_frame_age_s: float = 2.0
    worker_id: str = ""
    role: str = "auto"
    # /healthz, /readyz and /metrics of an inference replica
    inference_http_bind: str = "0.0.0.0:9100"
    # the leader claims frames pending (read, not acked) longer than this, on a timer: frames
    # read by a replica that had already lost the lease are processed or counted, not stranded
    pending_claim_idle_s: float = 5.0
    # capacity-aware leadership (inference/capacity.py): the leader hands the lease over to a
    # warm standby that needs at most this fraction of its time per frame (0 = never)
    inference_handover_ratio: float = 0.5
    # this replica's time per frame as announced to the others; 0 = measured when warm
    inference_ms_per_frame: float = 0.0
    # the cameras are split into this many shards, each with its own lease (inference/shards.py);
    # every replica leads some and stands by for the others. 1 = one leader for every camera
    inference_shards: int = 1

    # --- tracking, in the leader ---
    # auto (= bytetrack), bytetrack, botsort (BoT-SORT's motion model) or none; numpy + lap, no
    # torch (every inference image has them)
    tracker: str = "auto"
    # processed frames a lost track is kept for (ByteTrack's track_buffer)
    track_buffer: int = 30
    # tracker state saved to Redis every N processed frames (ids survive a failover)
    track_state_every: int = 3

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section."""
        require_positive(self, bad, "imgsz", "inference_batch", "max_frame_age_s",
                         "pending_claim_idle_s", "track_buffer", "track_state_every")
        if not 0.0 < self.conf < 1.0:
            raise bad("conf", "must be between 0 and 1")
        if not 0.0 < self.iou < 1.0:
            raise bad("iou", "must be between 0 and 1")
        if not 0.0 <= self.inference_handover_ratio < 1.0:
            raise bad("inference_handover_ratio", "must be from 0 (never) to below 1")
        if not 1 <= self.inference_shards <= MAX_SHARDS:
            raise bad("inference_shards", f"must be from 1 to {MAX_SHARDS}")
        if self.inference_ms_per_frame < 0:
            raise bad("inference_ms_per_frame", "must be 0 (measure) or a time in ms")
        if self.imgsz % 32:
            raise bad("imgsz", "must be a multiple of 32")
        if self.role not in {"auto", "standby"}:
            raise bad("role", "use auto (lead when the lease is free) or standby (never lead)")
        if not (self.device in {"auto", "cpu"} or re.fullmatch(r"(cuda:)?\d+", self.device)):
            raise bad("device", "use auto, cpu, 0 or cuda:0")
        require_bind(self, bad, "inference_http_bind")
        if self.tracker not in {"auto", "bytetrack", "botsort", "none"}:
            raise bad("tracker", "use auto, bytetrack, botsort or none")
        try:
            parse_classes(self.classes)
        except ClassesError as exc:
            raise bad("classes", str(exc)) from None
