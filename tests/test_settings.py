import subprocess
import sys

import pytest

from cctv.settings import SettingsError, load_settings

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
