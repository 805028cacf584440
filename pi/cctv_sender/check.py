"""``cctv-sender --check``: is the configuration usable? Camera, ingest, token, state dir."""

from __future__ import annotations

import dataclasses
import http.client
import os
import sys
import time

from cctv_sender.client import IngestClient
from cctv_sender.config import Config
from cctv_sender.jpeg import jpeg_size
from cctv_sender.neterrors import describe_error
from cctv_sender.sources import SourceConfigError, build_source
from cctv_sender.tlsverify import is_tls_refusal


def _say(ok: bool, what: str, detail: str) -> None:
    print(f"{'OK  ' if ok else 'FAIL'} {what}: {detail}", flush=True)


def check_state_dir(cfg: Config) -> bool:
    """The state directory exists (or can be made) and is writable."""
    path = cfg.state_dir / cfg.camera
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _say(False, "state", f"cannot create {path}: {exc.strerror}")
        return False
    if not os.access(path, os.W_OK | os.X_OK):
        _say(False, "state", f"{path} is not writable by uid {os.getuid()}")
        return False
    _say(True, "state", f"{path} is writable")
    return True


def check_camera(cfg: Config) -> bool:
    """Open the camera and read one frame."""
    try:
        source = build_source(cfg.source, quality=cfg.quality, loop=cfg.loop, size=cfg.size,
                              timeout_s=cfg.timeout_s, fps=cfg.fps)
    except SourceConfigError as exc:
        _say(False, "camera", str(exc))
        return False
    started = time.monotonic()
    try:
        source.open()
        try:
            source.grab()
            jpeg = source.retrieve()
        finally:
            source.close()
    except Exception as exc:  # report whatever the camera does, as one line
        hint = ""
        if cfg.source.kind in ("picamera2", "v4l2"):
            hint = " (is the camera connected and enabled, is it in use by the running " \
                   "service, is the user in the video group?)"
        _say(False, "camera", f"{exc}{hint}")
        return False
    size = jpeg_size(jpeg)
    dims = f"{size[0]}x{size[1]}" if size else "size unknown"
    _say(True, "camera", f"{source.describe()}: first frame {dims}, {len(jpeg) // 1024} KiB "
         f"JPEG in {time.monotonic() - started:.1f}s")
    return True


def check_ingest(cfg: Config) -> bool:
    """Every ingest URL answers and accepts the camera's token (without storing a frame)."""
    return all([_check_one_ingest(cfg, url) for url in cfg.ingest_urls])


def _check_one_ingest(cfg: Config, url: str) -> bool:
    client = IngestClient(url, cfg.camera, cfg.token, timeout_s=cfg.timeout_s, tls=cfg.tls)
    cfg = dataclasses.replace(cfg, ingest=url)  # the messages name this URL
    try:
        try:
            status, _body = client.get("/healthz")
        except (OSError, http.client.HTTPException) as exc:
            if is_tls_refusal(exc):
                _say(False, "tls", str(exc))
            else:
                _say(False, "ingest", f"{cfg.ingest} unreachable: {describe_error(exc)}")
            return False
        if client.scheme == "https":
            _say(True, "tls", f"certificate of {client.host}:{client.port} accepted "
                 f"({cfg.tls.describe()})")
        else:
            _say(True, "tls", "off (--insecure): the token crosses the network in clear")
        if status == 400 and b"tls_required" in _body:
            _say(False, "ingest", f"{cfg.ingest} speaks HTTPS: use https:// in the URL")
            return False
        if status != 200:
            _say(False, "ingest", f"{cfg.ingest}/healthz answered {status}: is this the "
                 "ingest URL?")
            return False
        # Ingest checks the token before the body: a text/plain POST with a good token gets
        # 415, with a bad one (or an unknown camera) 401/403, and nothing is stored either way.
        try:
            status, _h, _data = client._request(
                "POST", client.path, b"check",
                {**client.headers, "Content-Type": "text/plain", "X-Frame-Seq": "0",
                 "X-Capture-Ts": "0"})
        except (OSError, http.client.HTTPException) as exc:
            _say(False, "ingest", f"{cfg.ingest}: {describe_error(exc)}")
            return False
    finally:
        client.close()
    if status in (401, 403):
        # ingest answers an unknown camera and a wrong token alike (it tells no one which
        # cameras exist): both are this 403
        _say(False, "ingest", f"token refused for camera {cfg.camera!r} (HTTP {status}): "
             "the camera is not in ingest's registry or its token is wrong; check "
             "CCTV_SENDER_CAMERA, CCTV_SENDER_TOKEN / the token file against the registry")
        return False
    if status == 404:
        _say(False, "ingest", f"camera {cfg.camera!r} is not registered at ingest (HTTP 404)")
        return False
    if status not in (400, 415):
        _say(False, "ingest", f"unexpected answer {status} to a test request")
        return False
    _say(True, "ingest", f"{cfg.ingest} reachable, token accepted for camera {cfg.camera!r}")
    return True


def run_check(cfg: Config) -> int:
    """Run every check; 0 when all pass, 1 otherwise."""
    results = [check_state_dir(cfg), check_camera(cfg), check_ingest(cfg)]
    ok = all(results)
    print("all checks passed" if ok else "some checks failed", file=sys.stdout, flush=True)
    return 0 if ok else 1
