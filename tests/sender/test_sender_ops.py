"""Operations: sd_notify on a real NOTIFY_SOCKET, the watchdog, the systemd unit, the
installer, ``--check``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cctv_sender.client import IngestClient
from cctv_sender.sdnotify import Notifier
from cctv_sender.sender import Sender
from cctv_sender.sources import Source
from cctv_sender.spool import Spool
from cctv_sender.state import SequenceCounter

from sender_support import (
    CLIP_480,
    MjpegServer,
    SenderProc,
    sender_env,
    stream_seqs,
    wait_for,
)
from support import ROOT, free_port

#: camera tokens of the test registry (ingest refuses tokens under 20 characters)
TOK1 = "tok1-16charsfortests"

PI = ROOT / "pi"
UNIT = PI / "systemd" / "cctv-sender.service"


class NotifySocket:
    """A datagram socket where systemd would listen; collects (time, message)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [m for _t, m in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_notifier_speaks_the_protocol(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert n.enabled and n.watchdog_s == 2.0
    assert n.ready("starting") and n.watchdog() and n.status("a\nb") and n.stopping()
    time.sleep(0.3)
    listener.close()
    assert listener.texts() == ["READY=1\nSTATUS=starting", "WATCHDOG=1", "STATUS=a b",
                                "STOPPING=1"]
    # abstract namespace sockets are written @name
    name = f"cctv-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    abstract.settimeout(2)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
    assert abstract.recv(100) == b"WATCHDOG=1"
    abstract.close()
    # not under systemd, or the watchdog is for another pid: nothing is sent
    assert not Notifier({}).enabled and not Notifier({}).ready()
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000",
                     "WATCHDOG_PID": "1"}).watchdog_s == 0


def test_sender_notifies_ready_watchdog_status_stopping(ingest, rdb, tmp_path: Path,
                                                        jpegs: list[bytes]) -> None:
    ing = ingest()
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    with MjpegServer(jpegs, fps=20) as cam:
        s = SenderProc(["--ingest", ing.url, "--camera", "cam1", "--source",
                        cam.url + "/video.mjpg"], tmp_path / "state", tmp_path,
                       env=sender_env(CCTV_SENDER_TOKEN=TOK1, NOTIFY_SOCKET=path,
                                      WATCHDOG_USEC="900000"))
        # from the moment it streams (start-up on a loaded machine takes a while)
        wait_for(lambda: "streaming" in s.log(), 30, "the sender streaming")
        time.sleep(2.5)
        assert s.stop() == 0
    time.sleep(0.2)
    listener.close()
    texts = listener.texts()
    assert texts[0].startswith("READY=1")
    assert texts.count("WATCHDOG=1") >= 5  # every 0.3 s
    assert any(t.startswith("STATUS=streaming;") and "queue" in t and "spool" in t
               for t in texts), texts
    assert texts[-1] == "STOPPING=1"
    assert rdb.xlen("cctv:frames:cam1") > 10


class StuckSource(Source):
    """A camera whose driver hangs in grab (no timeout)."""

    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    def open(self) -> None:
        pass

    def grab(self) -> None:
        self.release.wait()

    def retrieve(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


def test_watchdog_pings_stop_when_a_thread_is_stuck(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    source = StuckSource()
    sender = Sender(source=source,
                    client=IngestClient(f"http://127.0.0.1:{free_port()}", "cam1", "t"),
                    spool=Spool(tmp_path / "spool", 0).open(),
                    seq=SequenceCounter(tmp_path / "seq").load(),
                    notifier=Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}),
                    stall_s=0.6)
    started = time.monotonic()
    runner = threading.Thread(target=sender.run, daemon=True)
    runner.start()
    time.sleep(2.0)
    sender.stop_event.set()
    source.release.set()
    runner.join(10)
    listener.close()
    pings = [t - started for t, m in listener.messages if m == "WATCHDOG=1"]
    assert pings and min(pings) < 0.6
    assert not [p for p in pings if 1.0 < p < 1.9], pings


# -- systemd unit -------------------------------------------------------------------------------
def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed "
                    "(apt install systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=always", "WatchdogSec=30", "StateDirectory=cctv-sender",
                 "EnvironmentFile=/etc/cctv-sender/cctv-sender.env", "SupplementaryGroups=video",
                 "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert line + "\n" in text
    # the unit names the installed program; verify wants it to exist, so point it at a stub
    stub = tmp_path / "cctv-sender"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "cctv-sender.service"
    unit.write_text(text.replace("/opt/cctv-sender/venv/bin/cctv-sender", str(stub)))
    out = _verify(unit)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out
    # and verify does catch mistakes (so the check above means something)
    unit.write_text(text.replace("/opt/cctv-sender/venv/bin/cctv-sender", str(stub))
                    .replace("WatchdogSec", "WatchdogSex"))
    assert "Unknown key" in _verify(unit).stderr


# -- installer ----------------------------------------------------------------------------------
def test_install_configure_run_uninstall(ingest, rdb, tmp_path: Path,
                                         jpegs: list[bytes]) -> None:
    ing = ingest()
    root = tmp_path / "root"
    layout = ["--prefix", str(root / "opt"), "--etc", str(root / "etc"), "--unit-dir",
              str(root / "units"), "--bin-dir", str(root / "bin")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCTV_", "PYTHON"))}
    # offline: build the wheel here (from a copy, to leave no build files in the repo) and
    # let the installer install it, as one would for a Pi without internet
    src = tmp_path / "src"
    shutil.copytree(PI, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("cctv_sender-0.1.0-*.whl"))
    out = subprocess.run(["bash", str(PI / "install.sh"), *layout, "--python", sys.executable,
                          "--wheel", str(wheel), "--no-apt", "--no-user", "--no-systemd"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cctv-sender 0.1.0 installed" in out.stdout
    exe = root / "bin" / "cctv-sender"
    venv_cfg = (root / "opt" / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in venv_cfg
    envfile = root / "etc" / "cctv-sender.env"
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o640
    unit = (root / "units" / "cctv-sender.service").read_text()
    assert f"ExecStart={root}/opt/venv/bin/cctv-sender\n" in unit
    assert f"EnvironmentFile={envfile}\n" in unit
    if shutil.which("systemd-analyze"):
        res = _verify(root / "units" / "cctv-sender.service")
        assert res.returncode == 0 and not res.stderr.strip(), res

    with MjpegServer(jpegs, fps=30) as cam:
        # configure as the README says: camera URL, ingest, name, token
        text = envfile.read_text()
        text = text.replace("CCTV_SENDER_SOURCE=picamera2:?size=1280x720",
                            f"CCTV_SENDER_SOURCE={cam.url}/?action=stream")
        text = text.replace("https://CHANGE_ME:8080", ing.url)
        # the test ingest is plain HTTP on loopback
        text = text.replace("#CCTV_SENDER_INSECURE=false", "CCTV_SENDER_INSECURE=true")
        text = text.replace("CCTV_SENDER_CAMERA=CHANGE_ME", "CCTV_SENDER_CAMERA=cam2")
        text = text.replace("CCTV_SENDER_TOKEN=CHANGE_ME", "CCTV_SENDER_TOKEN=tok2-16charsfortests")
        envfile.write_text(text + f"CCTV_SENDER_STATE_DIR={tmp_path / 'state'}\n")
        check = subprocess.run([str(exe), "--env-file", str(envfile), "--check"],
                               capture_output=True, text=True, timeout=60, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        run = subprocess.run([str(exe), "--env-file", str(envfile), "--max-frames", "5"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
    assert len(stream_seqs(rdb, "cam2")) == 5

    out = subprocess.run(["bash", str(PI / "uninstall.sh"), *layout, "--no-user",
                          "--no-systemd"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (root / "opt").exists() and not exe.is_symlink()
    assert not (root / "units" / "cctv-sender.service").exists()
    assert envfile.exists()  # settings are kept unless --purge


def test_install_one_instance_per_camera(ingest, rdb, tmp_path: Path,
                                         jpegs: list[bytes]) -> None:
    """``--camera`` twice: the template unit, one settings file per camera, and both senders
    running side by side from their own settings, each with its own state."""
    ing = ingest()
    root = tmp_path / "root"
    layout = ["--prefix", str(root / "opt"), "--etc", str(root / "etc"), "--unit-dir",
              str(root / "units"), "--bin-dir", str(root / "bin")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCTV_", "PYTHON"))}
    out = subprocess.run(["bash", str(PI / "install.sh"), *layout, "--python", sys.executable,
                          "--no-apt", "--no-user", "--no-systemd", "--camera", "cam1",
                          "--camera", "cam2"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    template = (root / "units" / "cctv-sender@.service").read_text()
    assert f"EnvironmentFile={root}/etc/cameras/%i.env\n" in template
    assert "Description=cctv-swarm camera sender for %i\n" in template
    assert "StateDirectory=cctv-sender\n" in template
    assert not (root / "etc" / "cctv-sender.env").exists()
    if shutil.which("systemd-analyze"):
        instance = tmp_path / "cctv-sender@cam1.service"
        instance.write_text(template.replace(f"{root}/opt/venv/bin/cctv-sender", "/bin/true"))
        res = _verify(instance)
        assert res.returncode == 0 and not res.stderr.strip(), res
    bad = subprocess.run(["bash", str(PI / "install.sh"), *layout, "--python", sys.executable,
                          "--no-apt", "--no-user", "--no-systemd", "--camera", "front door"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "--camera front door: a camera name" in bad.stderr

    state = tmp_path / "state"  # one root, as /var/lib/cctv-sender: a directory per camera
    exe = root / "bin" / "cctv-sender"
    tokens = dict(x.split(":") for x in str(ing.cctv["cameras"]).split(","))
    runs = []
    with MjpegServer(jpegs, fps=30) as cam:
        for name in ("cam1", "cam2"):
            envfile = root / "etc" / "cameras" / f"{name}.env"
            text = envfile.read_text()
            assert f"CCTV_SENDER_CAMERA={name}\n" in text
            text = text.replace("CCTV_SENDER_SOURCE=picamera2:?size=1280x720",
                                f"CCTV_SENDER_SOURCE={cam.url}/?action=stream")
            text = text.replace("https://CHANGE_ME:8080", ing.url)
            text = text.replace("#CCTV_SENDER_INSECURE=false", "CCTV_SENDER_INSECURE=true")
            text = text.replace("CCTV_SENDER_TOKEN=CHANGE_ME", f"CCTV_SENDER_TOKEN={tokens[name]}")
            envfile.write_text(text + f"CCTV_SENDER_STATE_DIR={state}\n")
            runs.append(subprocess.Popen([str(exe), "--env-file", str(envfile), "--max-frames",
                                          "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=env))
        for run in runs:
            _, err = run.communicate(timeout=60)
            assert run.returncode == 0, err
    assert len(stream_seqs(rdb, "cam1")) == 5 and len(stream_seqs(rdb, "cam2")) == 5
    assert (state / "cam1").is_dir() and (state / "cam2").is_dir()


# -- --check ------------------------------------------------------------------------------------
def _check(args: list[str], token: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cctv_sender", "--check", "--state-dir",
                           str(tmp_path / "state"), *args], capture_output=True, text=True,
                          timeout=60, env=sender_env(CCTV_SENDER_TOKEN=token))


def test_check_reports_each_problem_in_one_line(ingest, rdb, tmp_path: Path) -> None:
    ing = ingest()
    good = ["--source", str(CLIP_480), "--ingest", ing.url, "--camera", "cam1"]
    ok = _check(good, TOK1, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK   camera: file:intersection_cctv.mp4" in ok.stdout and "640x480" in ok.stdout
    assert "OK   ingest:" in ok.stdout and "token accepted" in ok.stdout
    assert rdb.xlen("cctv:frames:cam1") == 0  # checking stores nothing

    cases = [
        (good, "wrong", "FAIL ingest: token refused for camera 'cam1' (HTTP 403)"),
        (good[:-1] + ["nosuchcam"], TOK1, "token refused for camera 'nosuchcam' (HTTP 403)"),
        (good[:3] + [f"http://127.0.0.1:{free_port()}"] + good[4:], TOK1,
         "unreachable: connection refused"),
        (["--source", f"http://127.0.0.1:{free_port()}/video.mjpg"] + good[2:], TOK1,
         "FAIL camera: http://127.0.0.1"),
    ]
    for args, token, message in cases:
        out = _check(args, token, tmp_path)
        assert out.returncode == 1, out.stdout + out.stderr
        assert message in out.stdout, out.stdout
        assert "Traceback" not in out.stdout + out.stderr


def test_sigterm_during_outage_spools_and_next_run_sends_late(ingest, rdb, tmp_path: Path,
                                                              jpegs: list[bytes]) -> None:
    """A restart while ingest is down loses nothing: the spool is picked up next time."""
    port = free_port()
    state = tmp_path / "state"
    with MjpegServer(jpegs, fps=30) as cam:
        args = ["--ingest", f"http://127.0.0.1:{port}", "--camera", "cam1", "--source",
                cam.url + "/video.mjpg", "--fps", "10"]
        s = SenderProc(args, state, tmp_path, env=sender_env(CCTV_SENDER_TOKEN=TOK1))
        time.sleep(1.5)
        assert s.stop(signal.SIGTERM) == 0
        first = s.stats()
        assert first["delivered"] == 0 and first["spool_frames"] == first["captured"] >= 10
        ing = ingest()
        # a wrong token rejects the live frames but must not throw the spool away
        bad = SenderProc(["--ingest", ing.url, *args[2:], "--max-frames", "3",
                          "--flush-timeout", "1"], state, tmp_path, name="badtoken",
                         env=sender_env(CCTV_SENDER_TOKEN="wrong"))
        assert bad.wait(60) == 0, bad.log()
        assert bad.stats()["rejected"] == 3
        assert bad.stats()["spool_frames"] == first["captured"]
        s2 = SenderProc(["--ingest", ing.url, *args[2:], "--max-frames", "3"], state, tmp_path,
                        name="sender2", env=sender_env(CCTV_SENDER_TOKEN=TOK1))
        assert s2.wait(60) == 0, s2.log()
    got = stream_seqs(rdb, "cam1")
    late = sorted(seq for seq, is_late in got if is_late)
    assert late == list(range(first["first_seq"], first["last_seq"] + 1))
    assert len(got) == first["captured"] + 3
    assert s2.stats()["spool_frames"] == 0


@pytest.mark.parametrize(("source", "kind", "wanted", "unwanted"), [
    ("picamera2:?size=1280x720", "picamera2", {"python3-picamera2"}, {"python3-opencv"}),
    ("http://cam.local:8080/?action=stream", "mjpeg", set(),
     {"python3-opencv", "python3-picamera2"}),
    ("'v4l2:/dev/video0'", "opencv", {"python3-opencv"}, {"python3-picamera2"}),
    ("rtsp://u:p@cam/stream", "opencv", {"python3-opencv"}, {"python3-picamera2"}),
])
def test_installer_installs_only_what_the_source_needs(tmp_path: Path, source: str, kind: str,
                                                       wanted: set, unwanted: set) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "cctv-sender.env").write_text(f"# a comment\nCCTV_SENDER_SOURCE={source}\n")
    out = subprocess.run(["bash", str(PI / "install.sh"), "--etc", str(etc),
                          "--print-packages"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pkgs = set(out.stdout.split())
    assert wanted <= pkgs and not unwanted & pkgs, pkgs
    forced = subprocess.run(["bash", str(PI / "install.sh"), "--etc", str(etc),
                             "--source-kind", kind, "--print-packages"],
                            capture_output=True, text=True, timeout=60)
    assert set(forced.stdout.split()) == pkgs


def test_fresh_install_defaults_to_the_pi_camera_without_opencv(tmp_path: Path) -> None:
    out = subprocess.run(["bash", str(PI / "install.sh"), "--etc", str(tmp_path / "none"),
                          "--print-packages"], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["python3-venv", "python3-pip", "python3-picamera2"]


def test_unit_waits_for_real_time_sync() -> None:
    text = UNIT.read_text()
    unit = {k: v for k, _, v in (line.partition("=") for line in text.splitlines()
                                 if "=" in line and not line.startswith("#"))}
    assert "time-sync.target" in unit["Wants"].split()
    assert "time-sync.target" in unit["After"].split()
    assert "systemctl enable systemd-time-wait-sync.service" in (PI / "install.sh").read_text()
