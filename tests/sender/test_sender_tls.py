"""The sender against a real ingest behind a real nginx speaking TLS: it trusts the private CA
it is given or the pinned certificate, refuses any other certificate (says why, counts it,
sends nothing), and refuses plain http:// unless told --insecure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slowload import proxied_services
from tlsfiles import make_tls

from sender_support import CLIP_480, SenderProc, sender_env, stream_seqs

CAMERAS = "cam1:tok1-16charsfortests"


def _env(**extra: str) -> dict[str, str]:
    """The sender's environment without the test suite's --insecure default."""
    env = sender_env(CCTV_SENDER_TOKEN="tok1-16charsfortests", **extra)
    env.pop("CCTV_SENDER_INSECURE")
    return env


def _send(url: str, tmp_path: Path, name: str, *extra: str, env: dict[str, str] | None = None
          ) -> SenderProc:
    s = SenderProc(["--ingest", url, "--camera", "cam1", "--source", f"file:{CLIP_480}",
                    "--fps", "20", "--max-frames", "3", "--flush-timeout", "3",
                    "--reconnect-max", "0.5", *extra], tmp_path / f"state-{name}", tmp_path,
                   name=name, env=env or _env())
    s.wait(60)
    return s


def _check(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cctv_sender", "--check", "--state-dir",
                           str(tmp_path / "state-check"), "--source", str(CLIP_480),
                           "--ingest", url, "--camera", "cam1", *extra],
                          capture_output=True, text=True, timeout=60, env=_env())


@pytest.fixture(scope="module")
def cas(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("tls")
    return {"good": make_tls(base / "good"), "other": make_tls(base / "other")}


def test_sender_trusts_its_ca_or_pin_and_refuses_any_other_certificate(
        redis_server, rdb, tmp_path, cas) -> None:
    good, other = cas["good"], cas["other"]
    with proxied_services(redis_server.url, tmp_path, cameras=CAMERAS, web=False,
                          tls=good) as stack:
        # the private CA: accepted, frames arrive
        ok = _send(stack.ingest, tmp_path, "ca", "--ca-file", str(good.ca))
        assert ok.stats()["delivered"] == 3, ok.log()
        assert "ingest certificate checked against CA" in ok.log()
        assert len(stream_seqs(rdb, "cam1")) == 3

        # another CA: refused, with the reason, counted, and nothing sent
        bad = _send(stack.ingest, tmp_path, "wrong-ca", "--ca-file", str(other.ca))
        stats = bad.stats()
        assert stats["delivered"] == 0 and stats["tls_refused"] >= 1, bad.log()
        assert stats["ingest_state"] == "tls refused"
        assert f"TLS certificate of 127.0.0.1:{stack.ingest.rsplit(':', 1)[1]} refused" \
            in bad.log()
        assert "unable to get local issuer certificate" in bad.log()
        assert "frames kept in the spool" in bad.log()
        # the system's CAs (no --ca-file) do not know the private CA either; the hint says what
        # to give
        system = _send(stack.ingest, tmp_path, "system")
        assert system.stats()["tls_refused"] >= 1
        assert "give it with --ca-file, or pin it with --pin-sha256" in system.log()

        # a pinned fingerprint: accepted without any CA
        pinned = _send(stack.ingest, tmp_path, "pin", "--pin-sha256", good.fingerprint)
        assert pinned.stats()["delivered"] == 3, pinned.log()
        # the wrong pin: refused with both fingerprints
        wrong = _send(stack.ingest, tmp_path, "wrong-pin", "--pin-sha256", other.fingerprint)
        assert wrong.stats()["delivered"] == 0 and wrong.stats()["tls_refused"] >= 1
        assert f"is not the pinned {other.fingerprint}" in wrong.log()
        assert len(stream_seqs(rdb, "cam1")) == 6  # only the accepted senders' frames

        # --check says which check failed, in one line
        check = _check(stack.ingest, tmp_path, "--ca-file", str(other.ca))
        assert check.returncode == 1
        assert "FAIL tls: TLS certificate of 127.0.0.1" in check.stdout, check.stdout
        check = _check(stack.ingest, tmp_path, "--pin-sha256", good.fingerprint)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "OK   tls: certificate of 127.0.0.1" in check.stdout

        # plain HTTP: refused before anything is sent, unless --insecure
        plain_url = stack.ingest.replace("https://", "http://")
        refused = _send(plain_url, tmp_path, "plain")
        assert refused.proc.returncode == 2
        assert "is plain HTTP" in refused.log() and "--insecure" in refused.log()
        # --insecure on the TLS port: nginx refuses the request, and --check says why
        check = _check(plain_url, tmp_path, "--insecure")
        assert check.returncode == 1 and "speaks HTTPS: use https://" in check.stdout
        # --insecure to a plain HTTP ingest: sent, with a warning
        insecure = _send(stack.ingest_direct, tmp_path, "insecure", "--insecure")
        assert insecure.stats()["delivered"] == 3, insecure.log()
        assert "WARNING" in insecure.log() and "unencrypted" in insecure.log()
