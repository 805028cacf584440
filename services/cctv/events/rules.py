"""Rule evaluation for one camera: pure functions of the detections it is fed, with all its
state in one JSON-able dict (saved to Redis with each acked entry, so a restart resumes).

Rules (docs/events.md):

* ``dwell``: an object of the rule's classes is in a zone for at least ``seconds``. The event
  starts when it entered and ends when it leaves (outside for ``exit_grace_s``) or its track is
  lost (unseen for ``track_timeout_s``).
* ``line``: an object's anchor crosses a line segment, optionally in one ``direction``; an
  instant event.
* ``count``: at least ``count`` objects of the classes are in a zone for ``seconds``; ends when
  fewer remain for ``exit_grace_s``.

``cooldown_s``: after an event a rule does not fire again for the same track (dwell, line) or
at all (count) before this many seconds. A rule that needs verification returns the firing
first; the caller says with :meth:`CameraRules.commit` whether it was confirmed, and a rejected
candidate is not tried again for the same zone visit / crossing / crowd.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from cctv.events.config import CameraConfig, Rule
from cctv.events.zones import anchor_point, crosses_segment, crossing_direction, line_side
from cctv.events.zones import zone_contains as _zone_contains

#: a track's best view is replaced when it is older than this (its frame may be trimmed)
BEST_MAX_AGE_MS = 10_000


@dataclass
class Observation:
    """One detection result (a ``cctv:det:{cam}`` entry) as the rules see it."""

    camera: str
    det_id: str
    frame_id: str
    ts_ms: float
    dets: list[dict]
    w: int = 0
    h: int = 0


@dataclass
class Subject:
    """One object an event is about, at its best view (for snapshot, crop and verification)."""

    track: int | None
    name: str
    cls: int
    conf: float
    xyxy: list[int]
    det_id: str
    frame_id: str
    ts_ms: float

    @classmethod
    def of(cls, det: dict, obs: Observation) -> Subject:
        return cls(det.get("track"), str(det.get("name", det.get("cls"))), int(det.get("cls", -1)),
                   float(det.get("conf", 0.0)), [int(v) for v in det["xyxy"][:4]], obs.det_id,
                   obs.frame_id, obs.ts_ms)


@dataclass
class Firing:
    """What a rule decided on one observation."""

    kind: str  # "start" opens an event, "end" closes it, "instant" is both at once
    rule: Rule
    event_id: str
    camera: str
    start_ms: float
    end_ms: float | None = None
    subjects: list[Subject] = field(default_factory=list)
    zone: str = ""
    line: str = ""
    direction: str = ""
    count: int = 0
    first_frame: str = ""
    last_frame: str = ""
    reason: str = ""
    #: the key :meth:`CameraRules.commit` records the outcome under (track id or "")
    key: str = ""

    def to_json(self) -> dict:
        out = asdict(self)
        out["rule"] = self.rule.name
        return out


def _event_id(camera: str, rule: str, start_ms: float, track: int | str | None) -> str:
    return f"{camera}-{rule}-{int(start_ms)}-{track if track is not None else 'n'}"


class CameraRules:
    """The rules of one camera and their state."""

    def __init__(self, cam: CameraConfig, *, track_timeout_s: float = 2.0,
                 exit_grace_s: float = 0.5, state: dict | None = None) -> None:
        self.cam = cam
        self.track_timeout_ms = track_timeout_s * 1000
        self.exit_grace_ms = exit_grace_s * 1000
        self.state: dict[str, Any] = state or {}
        self.state.setdefault("tracks", {})
        self.state.setdefault("rules", {})
        for r in cam.rules:
            fresh = self._new_rule_state(r)
            saved = self.state["rules"].get(r.name)
            if not isinstance(saved, dict) or set(saved) != set(fresh):
                self.state["rules"][r.name] = fresh  # new rule, or its type changed

    @staticmethod
    def _new_rule_state(rule: Rule) -> dict:
        if rule.type == "count":
            return {"above": None, "above_frame": "", "below": None, "open": None,
                    "ended": None, "rejected": None}
        if rule.type == "line":
            return {"last": {}}
        return {"open": {}, "ended": {}, "rejected": {}}

    def snapshot(self) -> dict:
        """A deep copy of the state (JSON-able)."""
        return copy.deepcopy(self.state)

    # ---- tracks --------------------------------------------------------------------------
    def _update_track(self, det: dict, obs: Observation, crossings: dict) -> None:
        tid = str(det["track"])
        now = obs.ts_ms
        t = self.state["tracks"].get(tid)
        if t is None:
            t = self.state["tracks"][tid] = {"first": now, "zones": {}, "sides": {}, "best": None}
        t.update(last=now, name=str(det.get("name", det.get("cls"))), box=list(det["xyxy"][:4]))
        best = t["best"]
        if (best is None or float(det.get("conf", 0)) >= best["conf"]
                or now - best["ts_ms"] > BEST_MAX_AGE_MS):
            t["best"] = {"track": det.get("track"), "name": t["name"],
                         "cls": int(det.get("cls", -1)), "conf": float(det.get("conf", 0.0)),
                         "xyxy": [int(v) for v in det["xyxy"][:4]], "det_id": obs.det_id,
                         "frame_id": obs.frame_id, "ts_ms": now}  # asdict(Subject.of(...))
        for zname, zone in self.cam.zones.items():
            inside = _zone_contains(zone, det["xyxy"])
            z = t["zones"].get(zname)
            if inside:
                if z is None:
                    t["zones"][zname] = {"since": now, "frame": obs.frame_id, "out": None}
                else:
                    z["out"] = None
            elif z is not None:
                if z["out"] is None:
                    z["out"] = now
                if now - z["out"] >= self.exit_grace_ms:
                    del t["zones"][zname]
        for lname, line in self.cam.lines.items():
            p = anchor_point(det["xyxy"], line.anchor)
            side = line_side(line, p)
            if side == 0:
                continue
            prev = t["sides"].get(lname)
            if prev is not None and prev[0] != side and crosses_segment(line, (prev[1], prev[2]),
                                                                        p):
                crossings[(tid, lname)] = crossing_direction(line, (prev[1], prev[2]), p)
            t["sides"][lname] = [side, p[0], p[1]]

    def _expire_tracks(self, now: float) -> list[str]:
        gone = [tid for tid, t in self.state["tracks"].items()
                if now - t["last"] > self.track_timeout_ms]
        for tid in gone:
            del self.state["tracks"][tid]
        return gone

    # ---- evaluation ----------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[Firing]:
        """Update the state with one result; returns the rules' firings, ends first."""
        now = obs.ts_ms
        crossings: dict[tuple[str, str], str] = {}
        present: dict[str, dict] = {}
        for det in obs.dets:
            if det.get("track") is None or len(det.get("xyxy", ())) < 4:
                continue
            self._update_track(det, obs, crossings)
            present[str(det["track"])] = det
        lost = self._expire_tracks(now)
        firings: list[Firing] = []
        for rule in self.cam.rules:
            rs = self.state["rules"][rule.name]
            if rule.type == "dwell":
                firings += self._dwell(rule, rs, obs, present, lost)
            elif rule.type == "line":
                firings += self._line(rule, rs, obs, present, crossings)
            else:
                firings += self._count(rule, rs, obs)
        self.state["now"] = now
        return sorted(firings, key=lambda f: f.kind != "end")

    def _dwell(self, rule: Rule, rs: dict, obs: Observation, present: dict[str, dict],
               lost: list[str]) -> list[Firing]:
        now, out = obs.ts_ms, []
        for tid, ev in list(rs["open"].items()):
            t = self.state["tracks"].get(tid)
            left = t is None or rule.zone not in t["zones"]
            if left:
                del rs["open"][tid]
                rs["ended"][tid] = now
                subject = Subject(**t["best"]) if t and t["best"] else None
                if subject is None and ev.get("subject"):
                    subject = Subject(**ev["subject"])
                out.append(Firing("end", rule, ev["id"], obs.camera, ev["start"], now,
                                  [subject] if subject else [], zone=rule.zone, count=1,
                                  first_frame=ev.get("frame", ""), last_frame=obs.frame_id,
                                  reason="lost" if tid in lost or t is None else "left",
                                  key=tid))
        for tid in list(rs["rejected"]):
            t = self.state["tracks"].get(tid)
            if t is None or rule.zone not in t["zones"]:
                del rs["rejected"][tid]  # the rejected visit is over
        for tid, det in present.items():
            if tid in rs["open"] or not rule.matches(det):
                continue
            t = self.state["tracks"][tid]
            z = t["zones"].get(rule.zone)
            if z is None or z["out"] is not None or rs["rejected"].get(tid) == z["since"]:
                continue
            if now - rs["ended"].get(tid, -1e18) < rule.cooldown_s * 1000:
                continue
            if now - z["since"] >= rule.seconds * 1000:
                out.append(Firing("start", rule, _event_id(obs.camera, rule.name, z["since"],
                                                           int(tid)),
                                  obs.camera, z["since"], None, [Subject(**t["best"])],
                                  zone=rule.zone, count=1, first_frame=z["frame"],
                                  last_frame=obs.frame_id, key=tid))
        self._forget(rs["ended"], now, rule.cooldown_s)
        return out

    def _line(self, rule: Rule, rs: dict, obs: Observation, present: dict[str, dict],
              crossings: dict[tuple[str, str], str]) -> list[Firing]:
        now, out = obs.ts_ms, []
        for (tid, lname), direction in sorted(crossings.items()):
            if lname != rule.line or not rule.matches(present[tid]):
                continue
            if rule.direction != "any" and direction != rule.direction:
                continue
            if now - rs["last"].get(tid, -1e18) < rule.cooldown_s * 1000:
                continue
            out.append(Firing("instant", rule, _event_id(obs.camera, rule.name, now, int(tid)),
                              obs.camera, now, now, [Subject.of(present[tid], obs)],
                              line=lname, direction=direction, count=1,
                              first_frame=obs.frame_id, last_frame=obs.frame_id, key=tid))
        self._forget(rs["last"], now, max(rule.cooldown_s, self.track_timeout_ms / 1000))
        return out

    def _count(self, rule: Rule, rs: dict, obs: Observation) -> list[Firing]:
        now = obs.ts_ms
        zone = self.cam.zones[rule.zone]
        members = [d for d in obs.dets if len(d.get("xyxy", ())) >= 4 and rule.matches(d)
                   and _zone_contains(zone, d["xyxy"])]
        n = len(members)
        subjects = [Subject.of(d, obs) for d in sorted(members, key=lambda d: -d["conf"])]
        if n >= rule.count:
            rs["below"] = None
            if rs["above"] is None:
                rs["above"], rs["above_frame"] = now, obs.frame_id
            ev = rs["open"]
            if ev is not None:
                if n >= ev["peak"]:
                    ev["peak"] = n
                    ev["subjects"] = [asdict(s) for s in subjects]
                return []
            if rs["rejected"] == rs["above"]:
                return []
            if rs["ended"] is not None and now - rs["ended"] < rule.cooldown_s * 1000:
                return []
            if now - rs["above"] >= rule.seconds * 1000:
                return [Firing("start", rule, _event_id(obs.camera, rule.name, rs["above"], None),
                               obs.camera, rs["above"], None, subjects, zone=rule.zone, count=n,
                               first_frame=rs["above_frame"], last_frame=obs.frame_id)]
            return []
        rs["above"] = None
        ev = rs["open"]
        if ev is None:
            return []
        if rs["below"] is None:
            rs["below"] = now
        if now - rs["below"] < self.exit_grace_ms:
            return []
        rs["open"], rs["ended"], rs["below"] = None, now, None
        return [Firing("end", rule, ev["id"], obs.camera, ev["start"], now,
                       [Subject(**s) for s in ev["subjects"]], zone=rule.zone, count=ev["peak"],
                       first_frame=ev["frame"], last_frame=obs.frame_id, reason="below")]

    @staticmethod
    def _forget(times: dict[str, float], now: float, keep_s: float) -> None:
        for k in [k for k, t in times.items() if now - t > keep_s * 1000 + 60_000]:
            del times[k]

    # ---- outcome of a firing -------------------------------------------------------------
    def commit(self, firing: Firing, confirmed: bool) -> None:
        """Record whether a start/instant firing became an event (verified, or no verifier)."""
        if firing.kind == "end":
            return
        rs = self.state["rules"][firing.rule.name]
        rule = firing.rule
        if rule.type == "line":
            rs["last"][firing.key] = firing.start_ms
        elif rule.type == "dwell":
            if confirmed:
                rs["open"][firing.key] = {
                    "id": firing.event_id, "start": firing.start_ms, "frame": firing.first_frame,
                    "subject": asdict(firing.subjects[0]) if firing.subjects else None}
            else:
                rs["rejected"][firing.key] = firing.start_ms
        else:
            if confirmed:
                rs["open"] = {"id": firing.event_id, "start": firing.start_ms,
                              "frame": firing.first_frame, "peak": firing.count,
                              "subjects": [asdict(s) for s in firing.subjects]}
            else:
                rs["rejected"] = firing.start_ms

    def open_events(self) -> int:
        """How many events of this camera are open."""
        n = 0
        for r in self.cam.rules:
            rs = self.state["rules"][r.name]
            if r.type == "dwell":
                n += len(rs["open"])
            elif r.type == "count":
                n += rs["open"] is not None
        return n
