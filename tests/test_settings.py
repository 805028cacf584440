import subprocess
import sys

import pytest

from cctv.core.settings import load
from cctv.ingest.settings import IngestSettings
from cctv.settings import Settings, SettingsError, load_settings

from support import ROOT, free_port


def test_defaults_are_valid() -> None:
    s = load_settings({})
    assert s.redis_url.startswith("redis://") and s.lease_ttl_ms == 1000


@pytest.mark.parametrize("var,value", [
    ("CCTV_IMGSZ", "abc"), ("CCTV_IMGSZ", "100"), ("CCTV_CONF", "2"),
    ("CCTV_REDIS_URL", "http://x"), ("CCTV_LEASE_TTL_MS", "10"), ("CCTV_CAMERAS", "cam1"),
    ("CCTV_CAMERAS", "bad name:tok"), ("CCTV_CAMERAS_STRICT", "maybe"),
    ("CCTV_INGEST_BIND", "8080"), ("CCTV_ROLE", "boss"), ("CCTV_IMGZ", "640"),
])
def test_bad_variable_is_named(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var):
        load_settings({var: value})


def test_secret_from_file(tmp_path) -> None:
    secret = tmp_path / "cameras"
    secret.write_text("cam1:tok1-16charsfortests\n# comment\ncam2:tok2-16charsfortests\n")
    assert load_settings({"CCTV_CAMERAS_FILE": str(secret)}).camera_tokens == {
        "cam1": "tok1-16charsfortests", "cam2": "tok2-16charsfortests"}
    with pytest.raises(SettingsError, match="CCTV_CAMERAS_FILE"):
        load_settings({"CCTV_CAMERAS_FILE": str(tmp_path / "missing")})


def test_service_fails_fast_with_the_name() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "services"),
           "CCTV_FRAMES_MAXLEN": "-3"}
    proc = subprocess.run([sys.executable, "-m", "cctv", "ingest"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "CCTV_FRAMES_MAXLEN" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_model_is_one_clear_line(redis_server) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "services"),
           "CCTV_REDIS_URL": redis_server.url, "CCTV_MODEL": "/nonexistent/model.pt",
           "CCTV_INFERENCE_HTTP_BIND": f"127.0.0.1:{free_port()}", "CCTV_LOG_JSON": "false"}
    proc = subprocess.run([sys.executable, "-m", "cctv", "inference"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "CCTV_MODEL=/nonexistent/model.pt: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("var,value", [
    ("CCTV_FRAMES_MAXLEN", "5"),            # core
    ("CCTV_INGEST_WORKERS", "0"),           # ingest
    ("CCTV_TRACKER", "sort"),               # inference
    ("CCTV_EVENTS_HTTP_BIND", "9200"),      # events
    ("CCTV_MJPEG_QUALITY", "0"),            # web
    ("CCTV_SWARMWATCH_INTERVAL_S", "0"),    # swarmwatch
])
def test_every_section_is_validated(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var):
        load_settings({var: value})


def test_each_setting_belongs_to_one_section() -> None:
    # a field declared in two sections would silently take the default of one of them
    owners: dict[str, list[str]] = {}
    for klass in Settings.__mro__:
        for name in vars(klass).get("__annotations__", {}):
            owners.setdefault(name, []).append(klass.__name__)
    assert not {name: where for name, where in owners.items() if len(where) > 1}


def test_a_section_loads_alone() -> None:
    s = load(IngestSettings, {"CCTV_INGEST_WORKERS": "3", "CCTV_FRAMES_MAXLEN": "50"})
    assert (s.ingest_workers, s.frames_maxlen) == (3, 50)
    with pytest.raises(SettingsError, match="CCTV_INGEST_WORKERS"):
        load(IngestSettings, {"CCTV_INGEST_WORKERS": "0"})
    with pytest.raises(SettingsError, match="CCTV_WEB_THREADS is not a known setting"):
        load(IngestSettings, {"CCTV_WEB_THREADS": "8"})
