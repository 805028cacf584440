"""ByteTrack on numpy: multi-object tracking of one camera's detections, without torch.

The association is ByteTrack's (Zhang et al., 2022): a Kalman filter predicts every track, the
confident detections are matched to the tracks by IoU (scaled by the detection's score), the
tracks left over get a second chance with the low-confidence detections, new tracks need a
second matched frame to be confirmed (except on the very first frame), and a lost track is
kept for ``track_buffer`` frames. The thresholds are those ultralytics ships for its trackers,
so ids behave as they did when this project used ultralytics' ``BYTETracker``
(``tests/events/test_tracking.py`` compares the two on the sample clip).

Two motion models:

* ``bytetrack``: the state is (centre x, centre y, aspect ratio, height) and their velocities;
* ``botsort``: (centre x, centre y, width, height) and velocities, as BoT-SORT's filter. The
  cameras are fixed and no ReID model is shipped, so BoT-SORT's camera-motion compensation and
  appearance matching are not part of it; what remains is this motion model.

Every number of the tracker is a plain int, float or numpy float64 array, so its state is saved
without pickle (:mod:`cctv.inference.trackstate`). The linear assignment is ``lap``'s (a small
C extension that needs only numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRACKED, LOST, REMOVED = 1, 2, 3
KINDS = ("bytetrack", "botsort")

#: ultralytics' packaged tracker defaults (cfg/trackers/bytetrack.yaml, botsort.yaml)
HIGH_THRESH = 0.25  # detections at or above this take part in the first association
LOW_THRESH = 0.1  # detections above this (and below HIGH_THRESH) in the second one
NEW_TRACK_THRESH = 0.25  # an unmatched detection starts a track at or above this
MATCH_THRESH = 0.8  # most fused IoU distance of a first-association match
SECOND_MATCH_THRESH = 0.5  # most IoU distance of a second-association match
UNCONFIRMED_MATCH_THRESH = 0.7  # most fused distance of a match of an unconfirmed track
DUPLICATE_THRESH = 0.15  # a tracked and a lost track closer than this are one object

_STD_POS, _STD_VEL = 1.0 / 20, 1.0 / 160
_MOTION = np.eye(8)
_MOTION[:4, 4:] = np.eye(4)


@dataclass
class Track:
    """One tracked object; ``mean``/``cov`` are the Kalman state (8 and 8x8, float64)."""

    id: int
    state: int
    confirmed: bool
    score: float
    cls: int
    frame: int  # the last frame it was matched in (or started in)
    start: int
    length: int  # matched frames since it was (re)found
    mean: np.ndarray
    cov: np.ndarray
    #: re-found in the frame after it was removed (see :meth:`ByteTracker.update`)
    revived: bool = False
    idx: int = -1  # its detection's index in the frame it was last matched in


class KalmanFilter:
    """Constant-velocity Kalman filter on a box: ``aspect=True`` for (x, y, a, h), else
    (x, y, w, h); the noise scales with the box size as in DeepSORT/ByteTrack."""

    def __init__(self, aspect: bool) -> None:
        self.aspect = aspect

    def _scale(self, boxes: np.ndarray) -> np.ndarray:
        """Per-coordinate scale of the noise: (h, h, -, h) or (w, h, w, h); the aspect
        ratio's noise is a constant the callers set."""
        if self.aspect:
            h = boxes[..., 3]
            return np.stack([h, h, np.ones_like(h), h], axis=-1)
        return np.stack([boxes[..., 2], boxes[..., 3], boxes[..., 2], boxes[..., 3]], axis=-1)

    def initiate(self, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State of a new track at measurement ``box`` (no velocity)."""
        box = np.asarray(box, np.float64)
        mean = np.r_[box, np.zeros(4)]
        pos = 2 * _STD_POS * self._scale(box)
        vel = 10 * _STD_VEL * self._scale(box)
        if self.aspect:
            pos[2], vel[2] = 1e-2, 1e-5
        return mean, np.diag(np.square(np.r_[pos, vel]))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step for N tracks at once (``mean`` N x 8, ``cov`` N x 8 x 8)."""
        pos = _STD_POS * self._scale(mean[:, :4])
        vel = _STD_VEL * self._scale(mean[:, :4])
        if self.aspect:
            pos[:, 2], vel[:, 2] = 1e-2, 1e-5
        q = np.square(np.concatenate([pos, vel], axis=1))
        noise = np.zeros((len(mean), 8, 8))
        noise[:, range(8), range(8)] = q
        return mean @ _MOTION.T, _MOTION @ cov @ _MOTION.T + noise

    def update(self, mean: np.ndarray, cov: np.ndarray, boxes: np.ndarray) -> tuple[
            np.ndarray, np.ndarray]:
        """Correct N tracks with their measurements ``boxes`` (N x 4)."""
        std = _STD_POS * self._scale(mean[:, :4])
        if self.aspect:
            std[:, 2] = 1e-1
        s = cov[:, :4, :4] + np.einsum("ni,ij->nij", np.square(std), np.eye(4))
        gain = np.linalg.solve(s, np.transpose(cov[:, :, :4], (0, 2, 1)))  # N x 4 x 8
        gain = np.transpose(gain, (0, 2, 1))  # N x 8 x 4
        innovation = np.asarray(boxes, np.float64) - mean[:, :4]
        mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        cov = cov - gain @ s @ np.transpose(gain, (0, 2, 1))
        return mean, cov


def _iou_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU of boxes ``a`` (N x 4) and ``b`` (M x 4), xyxy, as float32."""
    if not len(a) or not len(b):
        return np.ones((len(a), len(b)), np.float32)
    a, b = a.astype(np.float32), b.astype(np.float32)
    iw = (np.minimum(a[:, None, 2], b[:, 2]) - np.maximum(a[:, None, 0], b[:, 0])).clip(0)
    ih = (np.minimum(a[:, None, 3], b[:, 3]) - np.maximum(a[:, None, 1], b[:, 1])).clip(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return 1 - inter / (area_a[:, None] + area_b - inter + 1e-7)


def _assign(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int],
                                                      list[int]]:
    """Minimum-cost matching with no pair above ``thresh``: (matches, unmatched rows, cols)."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    import lap

    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
    matches = [(i, int(j)) for i, j in enumerate(x) if j >= 0]
    return matches, [int(i) for i in np.flatnonzero(x < 0)], [int(j) for j in
                                                               np.flatnonzero(y < 0)]


@dataclass
class _Detection:
    box: np.ndarray  # the measurement in the filter's coordinates
    xyxy: np.ndarray
    score: float
    cls: int
    idx: int


class ByteTracker:
    """One camera's tracker: :meth:`update` once per processed frame."""

    def __init__(self, kind: str = "bytetrack", track_buffer: int = 30) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown tracker {kind!r}")
        self.kind = kind
        self.kf = KalmanFilter(aspect=kind == "bytetrack")
        self.max_lost = track_buffer
        self.frame = 0
        self.next_id = 1
        self.tracked: list[Track] = []
        self.lost: list[Track] = []

    # ---- geometry ------------------------------------------------------------------------
    def _measure(self, xyxy: np.ndarray) -> np.ndarray:
        w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        cx, cy = xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2
        third = w / h if self.kf.aspect else w
        return np.stack([cx, cy, third, h], axis=1)

    def _xyxy(self, tracks: list[Track]) -> np.ndarray:
        """Boxes of ``tracks`` from their filter state."""
        if not tracks:
            return np.zeros((0, 4))
        m = np.array([t.mean[:4] for t in tracks])
        w = m[:, 2] * m[:, 3] if self.kf.aspect else m[:, 2]
        h = m[:, 3]
        x1, y1 = m[:, 0] - w / 2, m[:, 1] - h / 2
        return np.stack([x1, y1, x1 + w, y1 + h], axis=1)

    def _distance(self, tracks: list[Track], dets: list[_Detection], fuse: bool) -> np.ndarray:
        d = _iou_distance(self._xyxy(tracks), np.array([x.xyxy for x in dets]).reshape(-1, 4))
        if fuse and d.size:
            d = 1 - (1 - d) * np.array([x.score for x in dets], np.float32)[None, :]
        return d

    # ---- motion --------------------------------------------------------------------------
    def predict(self, tracks: list[Track]) -> None:
        """One Kalman step for ``tracks``; a track that is not tracked stops growing (its
        size velocities are zeroed, as ByteTrack/BoT-SORT do)."""
        if not tracks:
            return
        mean = np.array([t.mean for t in tracks])
        cov = np.array([t.cov for t in tracks])
        for i, t in enumerate(tracks):
            if t.state != TRACKED:
                mean[i, 7] = 0
                if not self.kf.aspect:
                    mean[i, 6] = 0
        mean, cov = self.kf.predict(mean, cov)
        for t, m, c in zip(tracks, mean, cov, strict=True):
            t.mean, t.cov = m, c

    def coast(self, steps: int) -> None:
        """Advance every confirmed and lost track ``steps`` frames without detections (frames
        this tracker never saw); lost tracks age by the same steps."""
        pool = [t for t in self.tracked if t.confirmed] + self.lost
        for _ in range(steps):
            self.predict(pool)
        self.frame += steps

    def _correct(self, pairs: list[tuple[Track, _Detection]]) -> None:
        if not pairs:
            return
        mean = np.array([t.mean for t, _ in pairs])
        cov = np.array([t.cov for t, _ in pairs])
        mean, cov = self.kf.update(mean, cov, np.array([d.box for _, d in pairs]))
        for (t, d), m, c in zip(pairs, mean, cov, strict=True):
            t.mean, t.cov = m, c
            t.length = 0 if t.state != TRACKED else t.length + 1
            t.revived = t.revived or t.state == REMOVED
            t.state, t.confirmed, t.frame = TRACKED, True, self.frame
            t.score, t.cls, t.idx = d.score, d.cls, d.idx

    # ---- one frame -----------------------------------------------------------------------
    def update(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> dict[int, int]:
        """Track one frame's detections (``xyxy`` N x 4, ``conf`` and ``cls`` N); returns
        {detection index: track id} for the detections of confirmed tracks."""
        self.frame += 1
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        conf = np.asarray(conf, np.float32).reshape(-1)
        w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        valid = (w > 0) & (h > 0)  # the measurement divides by the height
        boxes = self._measure(xyxy)
        dets = [_Detection(boxes[i], xyxy[i], float(conf[i]), int(cls[i]), int(i))
                for i in range(len(conf)) if valid[i]]
        high = [d for d in dets if d.score >= HIGH_THRESH]
        low = [d for d in dets if LOW_THRESH < d.score < HIGH_THRESH]

        removed_before = {id(t) for t in self.lost if t.state == REMOVED}
        unconfirmed = [t for t in self.tracked if not t.confirmed]
        pool = [t for t in self.tracked if t.confirmed] + self.lost
        self.predict(pool)

        # 1. confirmed and lost tracks with the confident detections
        matches, u_track, u_det = _assign(self._distance(pool, high, True), MATCH_THRESH)
        matched = [(pool[i], high[j]) for i, j in matches]
        # 2. tracks still tracked but unmatched, with the weak detections
        rest = [pool[i] for i in u_track if pool[i].state == TRACKED]
        m2, u2, _ = _assign(self._distance(rest, low, False), SECOND_MATCH_THRESH)
        matched += [(rest[i], low[j]) for i, j in m2]
        self._correct(matched)
        for i in u2:
            rest[i].state = LOST
        # 3. unconfirmed tracks (seen once) with the confident detections left
        left = [high[j] for j in u_det]
        m3, u3, u_new = _assign(self._distance(unconfirmed, left, True),
                                UNCONFIRMED_MATCH_THRESH)
        self._correct([(unconfirmed[i], left[j]) for i, j in m3])
        dropped = {id(unconfirmed[i]) for i in u3}
        # 4. new tracks; a track seen on the very first frame is confirmed at once
        born = []
        for j in u_new:
            d = left[j]
            if d.score < NEW_TRACK_THRESH:
                continue
            mean, cov = self.kf.initiate(d.box)
            born.append(Track(self.next_id, TRACKED, self.frame == 1, d.score, d.cls,
                              self.frame, self.frame, 0, mean, cov, idx=d.idx))
            self.next_id += 1
        # 5. lost for too long: removed. As in ultralytics' ByteTrack, a track removed now
        # stays in the lost list for one more frame (it can still be matched then, and is
        # "revived"), and a revived track that is lost again is removed at once.
        for t in self.lost:
            if self.frame - t.frame > self.max_lost:
                t.state = REMOVED

        # the order ByteTrack keeps its lists in (it decides ties in the assignment)
        tracked = [t for t in self.tracked if t.state == TRACKED and id(t) not in dropped]
        tracked += born + [t for t in self.lost if t.state == TRACKED]
        lost = [t for t in self.lost if t.state != TRACKED and id(t) not in removed_before]
        lost += [t for t in self.tracked if t.state == LOST and not t.revived]
        self.tracked, self.lost = self._without_duplicates(tracked, lost)
        return {t.idx: t.id for t in self.tracked if t.confirmed}

    def _without_duplicates(self, tracked: list[Track], lost: list[Track]) -> tuple[
            list[Track], list[Track]]:
        """A tracked and a lost track over the same box (IoU > 0.85) are one object: keep the
        older one."""
        if not tracked or not lost:
            return tracked, lost
        d = _iou_distance(self._xyxy(tracked), self._xyxy(lost))
        drop_t, drop_l = set(), set()
        for p, q in zip(*np.where(d < DUPLICATE_THRESH), strict=True):
            age_p = tracked[p].frame - tracked[p].start
            age_q = lost[q].frame - lost[q].start
            (drop_l if age_p > age_q else drop_t).add(int(q) if age_p > age_q else int(p))
        return ([t for i, t in enumerate(tracked) if i not in drop_t],
                [t for i, t in enumerate(lost) if i not in drop_l])
