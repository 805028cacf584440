"""``cctv local`` as the README runs it: real redis-server, ingest, inference with a warm standby,
web, events, nginx, the demo camera and the cameras of a config file, all real processes.

The README's failover demo: kill -9 the leader that ``cctv status`` names, and the standby takes
over while local mode keeps running (the killed replica is started again). Then kill -9 ingest:
it is restarted, the cameras' spools drain, and no frame is missing from any stream. The user's
own ``CCTV_*`` settings and config file reach the services, a mistake is refused at start with
one line, the data outlives a run, and on the LAN a Pi's sender works with the printed settings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cctv.core import keys

from support import ROOT, SHARED, free_port

pytestmark = pytest.mark.slow


def local_env(**cctv: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_")}
    env["CCTV_SHARED"] = str(SHARED)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "services"), str(ROOT / "pi")])
    env.update(cctv)
    return env


def children(pid: int) -> dict[int, str]:
    """The processes ``pid`` started itself: pid -> command line."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                cmd = (stat.parent / "cmdline").read_bytes()
                out[int(stat.parent.name)] = cmd.replace(b"\0", b" ").decode(
                    errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


def service_pid(local: subprocess.Popen, needle: str) -> int:
    """The pid of the service ``local`` started whose command line ends with ``needle`` (its
    gunicorn workers, children of that service, are not counted)."""
    found = [p for p, cmd in children(local.pid).items() if cmd.endswith(needle)]
    assert len(found) == 1, (needle, children(local.pid))
    return found[0]


class LocalRun:
    """``cctv local`` in the background, its output collected in a file."""

    def __init__(self, tmp_path: Path, *args: str, name: str = "local", **cctv: str) -> None:
        if "--data-dir" not in args:  # never the user's own ~/.local/share/cctv-local
            args = (*args, "--data-dir", str(tmp_path / "data"))
        self.out_path = tmp_path / f"{name}.out"
        self.ingest_port, self.web_port = free_port(), free_port()
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cctv", "local", "--ingest-port", str(self.ingest_port),
                 "--web-port", str(self.web_port), "--fps", "5", *args],
                env=local_env(**cctv), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, cond, timeout_s: float, what: str) -> None:
        """Poll ``cond`` until true; else fail naming ``what``, with local mode's output."""
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n"
                                     f"{self.output()[-4000:]}")
            time.sleep(0.2)

    def redis_url(self, timeout_s: float = 120) -> str:
        self.wait(lambda: "CCTV_REDIS_URL=" in self.output() or self.proc.poll() is not None,
                  timeout_s, "cctv local to start")
        m = re.search(r"CCTV_REDIS_URL=(\S+) cctv status", self.output())
        assert m, self.output()
        return m.group(1)

    def status(self, url: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "cctv", "status", "--json"],
                             env=local_env(CCTV_REDIS_URL=url), capture_output=True, text=True,
                             timeout=30)
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(10)


def camera_seqs(r: redis.Redis, camera: str = "demo") -> list[int]:
    """The seq of every frame of ``camera`` in its stream, in stream order."""
    return [int(f[b"seq"]) for _i, f in r.xrange(keys.frames(camera))]


def test_the_readme_failover_demo_and_a_killed_ingest_keep_local_mode_running(tmp_path) -> None:
    import yaml

    # the demo camera and two cameras of a config file (pulled by local mode)
    clip = str(SHARED / "media" / "intersection_cctv.mp4")
    cams = ("demo", "east", "west")
    (tmp_path / "home.yaml").write_text(yaml.safe_dump({
        "cameras": {c: {"source": clip, "loop": True, "fps": 5} for c in cams[1:]},
        "demo": True}))
    # a setting of the user's own reaches the services: a longer frames stream than the
    # default, so the whole run stays in it for the check at the end
    run = LocalRun(tmp_path, "--standby", "--config", str(tmp_path / "home.yaml"),
                   CCTV_FRAMES_MAXLEN="2000")
    try:
        url = run.redis_url()
        r = redis.Redis.from_url(url)
        for cam in cams:
            run.wait(lambda c=cam: r.xlen(keys.detections(c)) > 10, 180, f"results of {cam}")
        run.wait(lambda: [x for x in run.status(url).get("replicas", [])
                          if x.get("role") == "standby" and x.get("age_s", 99) < 5], 120,
                 "a warm standby")
        before = run.status(url)
        leader = before["leader"]
        assert leader in ("local-a", "local-b"), before

        # the README's demo: kill the leader that `cctv status` names
        os.kill(service_pid(run.proc, f"inference --id {leader}"), signal.SIGKILL)
        run.wait(lambda: (run.status(url).get("leader") or leader) != leader, 30,
                 "the standby to take over")
        for cam in cams:
            n = r.xlen(keys.detections(cam))
            run.wait(lambda c=cam, n=n: r.xlen(keys.detections(c)) > n + 5, 60,
                     f"results of {cam} from the new leader")
        run.wait(lambda: re.search(r"inference(-standby)? restarted", run.output()), 30,
                 "the killed replica to be started again")
        assert run.proc.poll() is None, run.output()

        # kill -9 ingest: restarted; the cameras spool meanwhile and send it all afterwards
        os.kill(service_pid(run.proc, "cctv ingest"), signal.SIGKILL)
        run.wait(lambda: "ingest restarted" in run.output(), 30, "ingest to be started again")
        for cam in cams:
            seq = max(camera_seqs(r, cam))
            run.wait(lambda c=cam, s=seq: max(camera_seqs(r, c)) > s + 25, 60,
                     f"frames of {cam} through the new ingest")
        assert run.proc.poll() is None, run.output()
        for cam in cams:
            seqs = camera_seqs(r, cam)
            missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
            assert not missing, f"{cam}: frames lost around the ingest restart: {missing[:20]}"
            assert len(seqs) == len(set(seqs)), f"{cam}: a frame was stored twice"
    finally:
        code = run.stop()
    out = run.output()
    assert code == 0, out
    assert re.search(r"inference(-standby)? killed by signal 9; restarting", out), out
    assert "ingest killed by signal 9; restarting" in out, out
    assert "cctv local: stopped" in out, out


def test_a_mistyped_setting_is_refused_at_start(tmp_path) -> None:
    run = LocalRun(tmp_path, CCTV_FRAMES_MAXLENN="10")
    assert run.proc.wait(60) == 2, run.output()
    assert "CCTV_FRAMES_MAXLENN is not a known setting" in run.output(), run.output()


def test_on_the_lan_it_prints_the_settings_a_pi_sender_works_with(tmp_path) -> None:
    token = "pi1-token-for-the-lan-test"
    run = LocalRun(tmp_path, "--bind-lan", CCTV_CAMERAS=f"pi1:{token}")
    try:
        run.wait(lambda: "CCTV_SENDER_CAMERA=pi1" in run.output() or run.proc.poll() is not None,
                 120, "the Pi's settings")
        line = next(x for x in run.output().splitlines() if "CCTV_SENDER_CAMERA=pi1" in x)
        assert token not in run.output(), "a camera's token was printed"
        settings = dict(kv.split("=", 1) for kv in line.split() if kv.startswith("CCTV_"))
        settings["CCTV_SENDER_TOKEN"] = token
        settings["CCTV_SENDER_SOURCE"] = str(SHARED / "media" / "intersection_cctv.mp4")
        # the sender, configured as printed, checks the certificate by its pin and the token
        out = subprocess.run(
            [sys.executable, "-m", "cctv_sender", "--check", "--state-dir", str(tmp_path / "s")],
            env={**local_env(), **settings}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "token accepted for camera 'pi1'" in out.stdout, out.stdout
    finally:
        assert run.stop() == 0, run.output()


def test_without_cameras_of_its_own_it_says_how_to_add_one() -> None:
    from cctv.local import pi_instructions

    assert "CCTV_CAMERAS=<name>:<token>" in pi_instructions("https://h:8080", "AB", [])
    two = pi_instructions("https://h:8080", "AB:CD", ["a", "b"])
    assert "CCTV_SENDER_INGEST=https://h:8080 CCTV_SENDER_PIN_SHA256=AB:CD " \
           "CCTV_SENDER_CAMERA=b" in two


def test_a_second_run_finds_the_first_runs_frames_and_results(tmp_path) -> None:
    keep = {"CCTV_FRAMES_MAXLEN": "5000"}  # both runs' frames stay in the stream
    first = LocalRun(tmp_path, name="first", **keep)
    try:
        r = redis.Redis.from_url(first.redis_url())
        first.wait(lambda: r.xlen(keys.detections("demo")) > 5, 180, "results of the first run")
        seqs, results = camera_seqs(r), r.xlen(keys.detections("demo"))
        r.close()
    finally:
        assert first.stop() == 0, first.output()
    second = LocalRun(tmp_path, name="second", **keep)
    try:
        r = redis.Redis.from_url(second.redis_url())  # a new password, the same data
        assert r.xlen(keys.detections("demo")) >= results, "the first run's results are gone"
        assert camera_seqs(r)[:len(seqs)] == seqs, "the first run's frames are gone"
        second.wait(lambda: r.xlen(keys.detections("demo")) > results + 10, 180,
                    "results of the second run")
        both = camera_seqs(r)
        assert len(both) > len(seqs) + 5
        assert both == sorted(set(both)), "a sequence number was reused"
    finally:
        assert second.stop() == 0, second.output()


def test_a_config_file_with_a_pulled_camera_a_pi_camera_viewers_and_rules(tmp_path) -> None:
    import requests
    import yaml

    from cctv.web.passwords import make_account_line

    demo = (ROOT / "services" / "cctv" / "events" / "demo.yaml").read_text()
    (tmp_path / "rules.yaml").write_text(demo.replace("\n  demo:\n", "\n  yard:\n"))
    pi_token = "garage-token-of-the-pi-sender"
    config = {
        "cameras": {"yard": {"source": str(SHARED / "media" / "intersection_cctv.mp4"),
                             "loop": True, "fps": 5},
                    "garage": {"token": pi_token}},
        "viewers": {"alice": make_account_line("alice", "alice-password-1")},
        "events": "rules.yaml",
        "settings": {"classes": "car,truck,bus"},  # no people boxed: a setting that shows
    }
    (tmp_path / "home.yaml").write_text(yaml.safe_dump(config))
    run = LocalRun(tmp_path, "--config", str(tmp_path / "home.yaml"))
    pi = None
    try:
        url = run.redis_url()
        r = redis.Redis.from_url(url)
        out = run.output()
        assert "cameras: garage, yard" in out and "CCTV_VIEWERS account" in out, out
        assert "demo" not in r.smembers(keys.CAMERAS_ACTIVE)
        # the Pi's camera: a sender posting with the token of the config file
        pi = subprocess.Popen(
            [sys.executable, "-m", "cctv_sender", "--source",
             str(SHARED / "media" / "intersection_cctv.mp4"), "--loop", "--fps", "5",
             "--camera", "garage", "--ingest", f"http://127.0.0.1:{run.ingest_port}",
             "--insecure", "--state-dir", str(tmp_path / "pi")],
            env={**local_env(), "CCTV_SENDER_TOKEN": pi_token},
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for cam in ("yard", "garage"):
            run.wait(lambda c=cam: r.xlen(keys.detections(c)) > 5, 180, f"results of {cam}")
        # the config's settings reached the services: not one person in the street's results
        names = {d["name"] for _i, f in r.xrange(keys.detections("yard"))
                 for d in json.loads(f[b"dets"])}
        assert names and names <= {"car", "truck", "bus"}, names
        # ... its viewer logs in, and the rules run on the pulled camera
        page = requests.get(f"http://127.0.0.1:{run.web_port}/api/v1/cameras",
                            auth=("alice", "alice-password-1"), timeout=10)
        assert page.status_code == 200, page.text
        assert {c["camera"] for c in page.json()["cameras"]} >= {"yard", "garage"}, page.json()
        run.wait(lambda: r.xlen(keys.EVENTS) > 0, 120, "an event of the yard's rules")
    finally:
        if pi is not None:
            pi.terminate()
            pi.wait(10)
        assert run.stop() == 0, run.output()


@pytest.mark.parametrize("config, why", [
    ({"cameras": {"a b": {"token": "x" * 20}}}, "cameras.a b"),
    ({"cameras": {"cam": {}}}, "camera cam: give a source"),
    ({"cameras": {"cam": {"token": "short"}}}, "cameras.cam.token"),
    ({"cameras": {"cam": {"source": "/x.mp4", "fps": 0}}}, "cameras.cam.fps"),
    ({"camreas": {}}, "camreas"),
    ({"events": "missing.yaml"}, "events: no such file"),
])
def test_a_config_file_mistake_is_one_line_naming_the_field(tmp_path, config, why) -> None:
    import yaml

    (tmp_path / "home.yaml").write_text(yaml.safe_dump(config))
    run = LocalRun(tmp_path, "--config", str(tmp_path / "home.yaml"))
    assert run.proc.wait(60) == 2, run.output()
    lines = [x for x in run.output().splitlines() if x.startswith("cctv local: ")]
    assert len(lines) == 1 and "home.yaml: " in lines[0] and why in lines[0], run.output()
