"""The camera registry in a real redis-server, and ``cctv cameras`` as a user runs it: add,
list, show, set, rotate-token, remove; refused changes are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cctv.core import keys
from cctv.core.registry import (
    DetectSettings,
    Registry,
    RegistryCache,
    RegistryError,
    active_cameras,
    parse_mask,
    redact_url,
    token_digest,
)

from support import service_env


def cameras(redis_server, *args: str) -> subprocess.CompletedProcess:
    """``cctv cameras ARGS`` as a user runs it (the admin Redis user)."""
    return subprocess.run([sys.executable, "-m", "cctv", "cameras", *args],
                          env=service_env(redis_server.url), capture_output=True, text=True,
                          timeout=60)


def token_of(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("token:"))


def test_add_list_show_set_remove_through_the_command(redis_server, rdb) -> None:
    out = cameras(redis_server, "add", "gate", "--fps", "5", "--classes", "person,car",
                  "--mask", "0,0 0.5,0 0.5,0.5")
    assert out.returncode == 0, out.stderr
    token = token_of(out.stdout)
    assert len(token) >= 20 and "CCTV_SENDER_TOKEN=" + token in out.stdout
    cam = Registry(rdb).get("gate")
    assert cam is not None and cam.tokens == (token_digest(token),)
    assert cam.detect.classes == ("person", "car") and len(cam.detect.masks) == 1
    # the registry stores no clear token
    assert token.encode() not in rdb.hget(keys.CAMERAS_REGISTRY, "gate")

    out = cameras(redis_server, "add", "door", "--source",
                  "rtsp://viewer:s3cret-pass@10.0.0.5:554/stream1")
    assert out.returncode == 0, out.stderr
    assert "s3cret-pass" not in out.stdout and "viewer:***@10.0.0.5:554" in out.stdout

    listed = cameras(redis_server, "list")
    assert listed.returncode == 0 and "gate" in listed.stdout and "door" in listed.stdout
    assert "s3cret-pass" not in listed.stdout
    shown = json.loads(cameras(redis_server, "show", "door", "--json").stdout)
    assert shown["source"] == "rtsp://viewer:***@10.0.0.5:554/stream1"
    assert shown["tokens"] == 1

    out = cameras(redis_server, "set", "gate", "--min-conf", "0.4", "--clear-masks")
    assert out.returncode == 0, out.stderr
    cam = Registry(rdb).get("gate")
    assert cam.detect.min_conf == 0.4 and cam.detect.masks == ()
    assert cam.detect.classes == ("person", "car")  # what was not given stays

    rdb.sadd(keys.CAMERAS_ACTIVE, "gate")
    rdb.xadd(keys.frames("gate"), {"seq": "1"})
    out = cameras(redis_server, "remove", "gate", "--keep-data", "60")
    assert out.returncode == 0, out.stderr
    assert Registry(rdb).get("gate") is None
    assert "gate" not in active_cameras(rdb)
    assert 0 < rdb.ttl(keys.frames("gate")) <= 60
    assert "gate" in Registry(rdb).removed()
    # added again: a fresh camera, nothing left to expire
    assert cameras(redis_server, "add", "gate").returncode == 0
    assert rdb.ttl(keys.frames("gate")) == -1
    assert "gate" not in Registry(rdb).removed()


@pytest.mark.parametrize("args, says", [
    (["add", "bad name"], "camera name"),
    (["add", "cam", "--min-conf", "1.5"], "min_conf"),
    (["add", "cam", "--mask", "0,0 1,1"], "mask 1"),
    (["add", "cam", "--mask", "0,0 1;1 0,1"], "x,y"),
    (["add", "cam", "--min-area", "0.5", "--max-area", "0.1"], "min_area"),
    (["add", "cam", "--source", "ftp://nowhere/x"], "source"),
    (["set", "nobody", "--fps", "2"], "no camera"),
    (["rotate-token", "nobody"], "no camera"),
])
def test_a_refused_change_is_one_line_and_exit_2(redis_server, rdb, args, says) -> None:
    out = cameras(redis_server, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_adding_a_taken_name_is_refused(redis_server, rdb) -> None:
    assert cameras(redis_server, "add", "gate").returncode == 0
    out = cameras(redis_server, "add", "gate")
    assert out.returncode == 2 and "already registered" in out.stderr


def test_rotation_keeps_both_tokens_until_the_new_one_is_used(rdb) -> None:
    reg = Registry(rdb)
    _, old = reg.add("gate")
    _, new = reg.rotate_token("gate")
    assert reg.get("gate").tokens == (token_digest(old), token_digest(new))
    with pytest.raises(RegistryError, match="already rotating"):
        reg.rotate_token("gate")
    assert not reg.confirm_token("gate", token_digest(old))  # the old one confirms nothing
    assert reg.confirm_token("gate", token_digest(new))
    assert reg.get("gate").tokens == (token_digest(new),)
    reg.rotate_token("gate")
    assert reg.finish_rotation("gate").tokens[0] != token_digest(new)


def test_the_secret_seeds_the_registry_and_a_rotated_token_wins_over_it(rdb) -> None:
    reg = Registry(rdb)
    a, b = "a" * 24, "b" * 24
    assert reg.seed({"cam1": a, "cam2": b}) == ["cam1", "cam2"]
    assert reg.seed({"cam1": a}) == []  # nothing changed
    # the secret changed: a seeded camera follows it
    assert reg.seed({"cam1": "c" * 24}) == ["cam1"]
    assert reg.get("cam1").tokens == (token_digest("c" * 24),)
    # once rotated with the CLI, the registry's token stays
    _, new = reg.rotate_token("cam1")
    reg.confirm_token("cam1", token_digest(new))
    assert reg.seed({"cam1": "d" * 24}) == []
    assert reg.get("cam1").tokens == (token_digest(new),)
    # a removed camera is not brought back by the secret
    reg.remove("cam2")
    assert reg.seed({"cam2": b}) == [] and reg.get("cam2") is None


def test_the_cache_follows_changes_and_keeps_its_copy_over_a_bad_entry(rdb) -> None:
    reg = Registry(rdb)
    cache = RegistryCache(rdb, max_age_s=0.0)
    assert cache.snapshot().cameras == {}
    reg.add("gate")
    assert set(cache.snapshot().cameras) == {"gate"}
    rdb.hset(keys.CAMERAS_REGISTRY, "broken", "{not json")
    rdb.hset(keys.CAMERAS_REGISTRY, "bad name!", "{}")
    rdb.incr(keys.CAMERAS_VERSION)
    assert set(cache.snapshot().cameras) == {"gate"}  # malformed entries are left out


def test_a_forced_read_knows_a_camera_added_right_after_a_refresh(rdb) -> None:
    cache = RegistryCache(rdb, max_age_s=60.0)
    assert "porch" not in cache.snapshot().cameras
    Registry(rdb).add("porch")  # just after the copy was read: the copy is fresh but old
    assert "porch" not in cache.snapshot().cameras
    assert "porch" in cache.snapshot(force=True).cameras


def test_detect_settings_and_urls_are_checked() -> None:
    d = DetectSettings.from_json({"classes": ["person"], "min_conf": 0.3,
                                  "masks": [[[0, 0], [1, 0], [1, 1]]]})
    assert DetectSettings.from_json(d.to_json()) == d
    for bad in ({"min_conf": "high"}, {"min_conf": True}, {"masks": [[[0, 0]]]},
                {"masks": [[[0, 0], [2, 0], [1, 1]]]}, {"colour": "red"}, [],
                {"classes": []}):
        with pytest.raises(RegistryError):
            DetectSettings.from_json(bad)
    assert parse_mask("0,0 1,0 0.5,1") == ((0, 0), (1, 0), (0.5, 1))
    assert redact_url("rtsp://u:p@h:554/x") == "rtsp://u:***@h:554/x"
    assert redact_url("rtsp://h/x") == "rtsp://h/x"
    assert redact_url(None) is None
