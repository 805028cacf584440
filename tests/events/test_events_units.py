"""Events building blocks on synthetic data: config validation, geometry, rules, captions,
signatures (the tracker has its own module, test_tracking.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cctv.events import captions
from cctv.events.config import EventsConfigError, Line, load_config, parse_config
from cctv.events.delivery import caption_only, sign, verify_signature
from cctv.events.rules import CameraRules, Observation
from cctv.events.zones import crosses_segment, crossing_direction, in_polygon, line_side

DEMO = Path(__file__).resolve().parents[2] / "services" / "cctv" / "events" / "demo.yaml"


def cfg(rules: list[dict], **extra) -> dict:
    return {"cameras": {"cam1": {
        "zones": {"gate": [[100, 100], [300, 100], [300, 300], [100, 300]]},
        "lines": {"mid": [[200, 0], [200, 400]]},
        "rules": rules}}, **extra}


# ---- config --------------------------------------------------------------------------------
def test_demo_config_loads() -> None:
    c = load_config(DEMO)
    assert set(c.cameras) == {"demo"}
    assert {r.type for r in c.cameras["demo"].rules} == {"line", "dwell", "count"}


@pytest.mark.parametrize("doc, where", [
    (cfg([{"name": "a", "type": "dwell", "zone": "gate", "seconds": -1}]),
     "cameras.cam1.rules[0].seconds: must be >= 0"),
    (cfg([{"name": "a", "type": "dwell", "zone": "nope"}]), "cameras.cam1.rules[0].zone: no zone"),
    (cfg([{"name": "a", "type": "dwel", "zone": "gate"}]), "cameras.cam1.rules[0].type"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "seconds": 3}]),
     "cameras.cam1.rules[0].seconds: unknown key"),
    (cfg([{"name": "a", "type": "count", "zone": "gate"}]), "cameras.cam1.rules[0].count"),
    (cfg([{"name": "a", "type": "line", "line": "mid"}, {"name": "a", "type": "line",
                                                         "line": "mid"}]),
     "cameras.cam1.rules[1].name: 'a' is used twice"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "direction": "north"}]),
     "cameras.cam1.rules[0].direction"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "verify": {"model": "/no/such.pt"}}]),
     "cameras.cam1.rules[0].verify.model: /no/such.pt does not exist"),
    (cfg([], webhooks=[{"name": "w", "url": "ftp://x"}]), "webhooks[0].url"),
    (cfg([], timezone="Mars/Olympus"), "timezone"),
    ({"cameras": {"cam1": {"zones": {"z": [[0, 0], [1, 1]]}}}}, "cameras.cam1.zones.z"),
    ({"cameras": {"cam1": {"lines": {"l": [[5, 5], [5, 5]]}}}}, "cameras.cam1.lines.l"),
    ({"camera": {}}, "camera: unknown key (allowed: cameras, clip_margin_s"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "seconds": 3}]),
     "(allowed: classes, cooldown_s, direction, line, min_conf, name, type, verify)"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "min_conf": "0.5"}]),
     "cameras.cam1.rules[0].min_conf: must be a number, not '0.5'"),
    (cfg([{"name": "a", "type": "line", "line": "mid", "classes": [True]}]),
     "cameras.cam1.rules[0].classes[0]: a class is a name or an id"),
    (cfg([{"name": "a", "zone": "gate"}]), "cameras.cam1.rules[0].type: is required"),
    ({"cameras": {"bad name": {}}}, "cameras.bad name: 'bad name' must match"),
    ({"cameras": {"cam1": {"zones": {"z": [[0, 0], [1], [2, 2]]}}}},
     "cameras.cam1.zones.z.points[1]: a point is [x, y] in pixels"),
    ({"webhooks": [{"name": "w", "url": "http://x", "images": ["crop", "video"]}]},
     "webhooks[0].images[1]: video is not one of crop or snapshot"),
])
def test_config_errors_name_file_and_field(doc: dict, where: str) -> None:
    with pytest.raises(EventsConfigError) as err:
        parse_config(doc, "rules.yaml")
    assert str(err.value).startswith("rules.yaml: "), err.value
    assert where in str(err.value), err.value


def test_config_reports_every_error_at_once() -> None:
    with pytest.raises(EventsConfigError) as err:
        parse_config({"mqtt": {"host": "broker", "port": 70000, "qos": 3}}, "rules.yaml")
    assert str(err.value).splitlines() == ["rules.yaml: mqtt.port: must be <= 65535",
                                           "rules.yaml: mqtt.qos: must be <= 2"]


def test_config_empty_sections_are_empty() -> None:
    c = parse_config({"cameras": {"cam1": {"zones": None, "lines": None, "rules": None}},
                      "webhooks": None}, "rules.yaml")
    assert c.cameras["cam1"].rules == () and c.webhooks == ()
    assert parse_config({"cameras": {1: {}}}).cameras["1"].name == "1"


def test_config_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [unclosed\n")
    with pytest.raises(EventsConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(EventsConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    good = tmp_path / "rules.json"
    good.write_text(json.dumps(cfg([{"name": "a", "type": "line", "line": "mid"}])))
    assert load_config(good).cameras["cam1"].rules[0].name == "a"


def test_events_settings_are_validated() -> None:
    from cctv.settings import SettingsError, load_settings

    s = load_settings({"CCTV_TRACKER": "botsort", "CCTV_EVENTS_RETENTION_DAYS": "0.5"})
    assert s.tracker == "botsort" and s.events_retention_days == 0.5
    for var, value in (("CCTV_TRACKER", "deepsort"), ("CCTV_TRACK_BUFFER", "0"),
                       ("CCTV_EVENTS_MAX_BYTES", "-1"), ("CCTV_EVENTS_HTTP_BIND", "nope")):
        with pytest.raises(SettingsError, match=var):
            load_settings({var: value})


# ---- geometry ------------------------------------------------------------------------------
def test_geometry() -> None:
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert in_polygon((5, 5), square) and in_polygon((10, 5), square)
    assert not in_polygon((11, 5), square) and not in_polygon((5, -0.1), square)
    assert in_polygon((0, 5), square) and in_polygon((10, 0), square)
    ell = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]  # concave
    assert in_polygon((2, 7), ell) and in_polygon((7, 2), ell) and not in_polygon((7, 7), ell)
    line = Line("l", (100, 0), (100, 200))
    assert line_side(line, (90, 50)) == -line_side(line, (110, 50)) != 0
    assert line_side(line, (101, 50)) == 0  # within the margin: on neither side
    assert crosses_segment(line, (90, 50), (110, 52))
    assert not crosses_segment(line, (90, 250), (110, 250))  # past the segment's end
    assert crossing_direction(line, (90, 50), (110, 40)) == "right"
    assert crossing_direction(line, (110, 50), (90, 60)) == "left"
    flat = Line("f", (0, 100), (200, 100))
    assert crossing_direction(flat, (50, 90), (60, 110)) == "down"


# ---- rules ---------------------------------------------------------------------------------
def det(track: int | None, x: float, y: float, name: str = "car", conf: float = 0.8) -> dict:
    """A 20x20 box whose bottom centre is (x, y)."""
    return {"track": track, "name": name, "cls": 2 if name == "car" else 0, "conf": conf,
            "xyxy": [x - 10, y - 20, x + 10, y]}


class Feed:
    """Feeds observations at 10 fps and collects firings; can round-trip the state via JSON."""

    def __init__(self, rules: list[dict], **extra) -> None:
        self.cam = parse_config(cfg(rules, **extra)).cameras["cam1"]
        self.engine = CameraRules(self.cam, track_timeout_s=1.0, exit_grace_s=0.3)
        self.t, self.n = 1_000_000.0, 0

    def step(self, dets: list[dict], confirm: bool = True, reload: bool = False) -> list:
        self.n += 1
        obs = Observation("cam1", f"{self.n}-0", f"{self.n}-0", self.t, dets)
        self.t += 100
        out = self.engine.observe(obs)
        for f in out:
            self.engine.commit(f, confirm)
        if reload:  # what a restart does: state from JSON
            self.engine = CameraRules(self.cam, track_timeout_s=1.0, exit_grace_s=0.3,
                                      state=json.loads(json.dumps(self.engine.state)))
        return out


def test_dwell_fires_after_seconds_and_ends_when_the_object_leaves() -> None:
    f = Feed([{"name": "wait", "type": "dwell", "zone": "gate", "seconds": 1, "classes": ["car"],
               "cooldown_s": 5}])
    fired = []
    for i in range(15):  # 1.5 s inside
        fired += f.step([det(7, 150, 200), det(8, 150, 200, name="person")], reload=i % 4 == 0)
    starts = [x for x in fired if x.kind == "start"]
    assert len(starts) == 1 and starts[0].subjects[0].track == 7
    assert starts[0].start_ms == 1_000_000.0  # the event starts when it entered
    assert starts[0].event_id == "cam1-wait-1000000-7"
    ends = []
    for _ in range(5):  # outside for 0.5 s > grace
        ends += f.step([det(7, 400, 200)])
    assert [x.kind for x in ends] == ["end"] and ends[0].reason == "left"
    # back inside within the cooldown: no new event
    assert not [x for _ in range(15) for x in f.step([det(7, 150, 200)]) if x.kind == "start"]


def test_dwell_jitter_at_the_edge_and_lost_tracks() -> None:
    f = Feed([{"name": "wait", "type": "dwell", "zone": "gate", "seconds": 0.5}])
    out = []
    for i in range(20):  # one frame in three just outside: within the exit grace
        out += f.step([det(3, 150 if i % 3 else 310, 200)])
    assert [x.kind for x in out] == ["start"]
    out = []
    for _ in range(12):  # the track disappears: ends as lost after the timeout
        out += f.step([])
    assert [x.kind for x in out] == ["end"] and out[0].reason == "lost"


def test_line_crossing_once_per_track_with_direction() -> None:
    f = Feed([{"name": "right", "type": "line", "line": "mid", "direction": "right"},
              {"name": "any", "type": "line", "line": "mid"}])
    out = []
    for x in (150, 180, 199, 201, 199, 201, 230, 260):  # jitter on the line is no crossing
        out += f.step([det(1, x, 200), det(2, 400 - x, 200)])
    by_rule = {r: sorted((x.subjects[0].track, x.direction) for x in out if x.rule.name == r)
               for r in ("right", "any")}
    assert by_rule["right"] == [(1, "right")]
    assert by_rule["any"] == [(1, "right"), (2, "left")]
    assert all(x.kind == "instant" for x in out)


def test_count_rule_and_rejected_verification() -> None:
    f = Feed([{"name": "crowd", "type": "count", "zone": "gate", "count": 3, "seconds": 0.3,
               "classes": ["person"], "cooldown_s": 0}])
    people = [det(i, 120 + 20 * i, 200, name="person") for i in range(4)]
    out = []
    for _ in range(6):
        out += f.step(people, confirm=False)  # the verifier says no
    assert [x.kind for x in out] == ["start"], "rejected once, not again for the same crowd"
    out = []
    for _ in range(5):
        out += f.step(people[:1])
    for _ in range(6):
        out += f.step(people[:3])  # a new crowd, confirmed
    assert [x.kind for x in out] == ["start"] and out[0].count == 3
    out = []
    for _ in range(5):
        out += f.step(people[:1])
    assert [x.kind for x in out] == ["end"] and out[0].reason == "below"


# ---- captions and signatures ---------------------------------------------------------------
def test_captions() -> None:
    from zoneinfo import ZoneInfo

    utc = ZoneInfo("UTC")
    assert captions.plural(2, "person") == "2 persons"
    assert captions.plural(3, "traffic light") == "3 traffic lights"
    assert captions.plural(2, "bus") == "2 buses"
    t0 = 1_700_000_000_000  # 22:13:20 UTC
    subjects = [{"name": "person"}, {"name": "person"}]
    ev = {"type": "count", "status": "open", "start_ms": t0, "zone": "gate", "count": 2,
          "subjects": subjects}
    assert captions.caption(ev, utc) == "2 persons in zone 'gate' at 22:13:20"
    ev.update(status="closed", end_ms=t0 + 12_000)
    assert captions.caption(ev, utc) == "up to 2 persons in zone 'gate' from 22:13:20 for 12 s"
    ev = {"type": "dwell", "status": "closed", "start_ms": t0, "end_ms": t0 + 75_000,
          "zone": "gate", "subjects": [{"name": "car"}]}
    assert captions.caption(ev, utc) == "1 car entered zone 'gate' at 22:13:20, stayed 1 min 15 s"
    ev = {"type": "line", "start_ms": t0, "line": "mid", "direction": "left",
          "subjects": [{"name": "truck"}]}
    assert captions.caption(ev, utc) == "1 truck crossed line 'mid' heading left at 22:13:20"
    assert {"car", "cars", "crossed"} <= captions.words("2 Cars crossed")


def test_health_endpoints_and_the_metrics_token() -> None:
    """The events service's /metrics needs CCTV_METRICS_TOKEN when set, like every service's."""
    import time
    from types import SimpleNamespace

    import requests

    from cctv.events.service import _health_server

    from support import free_port

    port = free_port()
    svc = SimpleNamespace(running=True, redis_ok_at=time.monotonic(), s=SimpleNamespace(
        events_http_bind=f"127.0.0.1:{port}", metrics_token="t" * 20))
    server = _health_server(svc)
    url = f"http://127.0.0.1:{port}"
    try:
        assert requests.get(url + "/healthz", timeout=5).json() == {"status": "ok"}
        r = requests.get(url + "/readyz", timeout=5)
        assert (r.status_code, r.json()) == (200, {"ready": True})
        r = requests.get(url + "/metrics", timeout=5)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = requests.get(url + "/metrics", headers={"Authorization": "Bearer " + "t" * 20},
                         timeout=5)
        assert r.status_code == 200 and "cctv_events_" in r.text
        svc.running = False
        assert requests.get(url + "/readyz", timeout=5).status_code == 503
        assert requests.get(url + "/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_signature_and_captions_only() -> None:
    body = b'{"events":[]}'
    sig = sign("s3cret", "1700000000", body)
    assert sig.startswith("sha256=") and len(sig) == 71
    assert verify_signature("s3cret", "1700000000", body, sig, now=1700000010)
    assert not verify_signature("other", "1700000000", body, sig, now=1700000010)
    assert not verify_signature("s3cret", "1700000000", body + b" ", sig, now=1700000010)
    assert not verify_signature("s3cret", "1700000000", body, sig, now=1700009999)  # replayed
    ev = {"type": "event", "id": "x", "camera": "c", "rule": "r", "caption": "1 car",
          "box": [1, 2, 3, 4], "track": 5, "crop_jpeg_b64": "..."}
    assert set(caption_only(ev)) == {"type", "id", "camera", "rule", "status", "start", "end",
                                     "caption"}
