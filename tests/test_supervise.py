"""The supervisor of ``cctv local``'s children: an exited child is logged and started again after
its backoff, what it left in its session goes with it, and stop() ends everything."""

from __future__ import annotations

import io
import os
import signal
import sys
import time

from cctv.supervise import Supervisor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_exited_child_is_restarted_after_its_backoff_and_stop_ends_all(tmp_path) -> None:
    out = io.StringIO()
    sup = Supervisor(out=out, backoff_s=0.2, backoff_max_s=0.4)
    # a child that leaves a grandchild in its session, like a gunicorn master its workers
    script = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)")
    child = sup.command("svc", [sys.executable, "-c", script], dict(os.environ),
                        tmp_path / "svc.log")
    end = time.monotonic() + 10
    while not (tmp_path / "svc.log").read_text().strip() and time.monotonic() < end:
        time.sleep(0.05)
    grandchild = int((tmp_path / "svc.log").read_text().split()[0])
    first = child.proc
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    sup.check()
    assert "svc killed by signal 9; restarting it in 0.2s" in out.getvalue()
    end = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(grandchild), "the killed child's session was left running"
    assert child.proc is first, "restarted before its backoff"
    time.sleep(0.25)
    sup.check()
    assert child.proc is not first and child.proc.poll() is None and child.restarts == 1
    assert "svc restarted" in out.getvalue()
    # a second exit soon after: the backoff has doubled (to its cap)
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(5)
    sup.check()
    assert "restarting it in 0.4s" in out.getvalue()
    time.sleep(0.45)
    sup.check()
    last = child.proc
    sup.stop(grace_s=5)
    assert last.poll() is not None


def test_a_child_that_cannot_start_again_is_retried(tmp_path) -> None:
    out = io.StringIO()
    sup = Supervisor(out=out, backoff_s=0.1, backoff_max_s=0.1)
    starts = []

    def spawn():
        import subprocess

        starts.append(time.monotonic())
        if len(starts) == 2:
            raise OSError("no such binary")
        return subprocess.Popen([sys.executable, "-c", "pass"])

    sup.add("flaky", spawn, tmp_path / "flaky.log")
    end = time.monotonic() + 10
    while len(starts) < 3 and time.monotonic() < end:
        sup.check()
        time.sleep(0.05)
    assert len(starts) >= 3, out.getvalue()
    assert "flaky did not start again (no such binary); retrying" in out.getvalue()
    sup.stop(grace_s=5)
