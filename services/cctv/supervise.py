"""Child processes of ``cctv local``: started, watched, restarted with backoff when they exit.

A child that exits (crashed, killed) is logged on stderr with its exit code and log file, and
started again after a backoff (1 s, doubling up to 10 s; back to 1 s once it has run for 30 s),
so one failing service never ends the run. :meth:`Supervisor.stop` ends them all in reverse
order of start: SIGTERM to each process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass
class Child:
    """One supervised process: ``spawn`` starts it (again) and returns its Popen."""

    name: str
    spawn: Callable[[], subprocess.Popen]
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    #: when a restart is due (0: running, or not scheduled)
    restart_at: float = 0.0
    delay_s: float = 0.0


class Supervisor:
    """Start children, restart the ones that exit, stop them all at the end."""

    def __init__(self, out: TextIO | None = None, backoff_s: float = 1.0,
                 backoff_max_s: float = 10.0, stable_s: float = 30.0) -> None:
        self.out = out or sys.stderr
        self.backoff_s, self.backoff_max_s, self.stable_s = backoff_s, backoff_max_s, stable_s
        self.children: list[Child] = []

    def command(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> Child:
        """Start ``cmd`` (its own session, stdout and stderr appended to ``log_path``)."""
        def spawn() -> subprocess.Popen:
            with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

        return self.add(name, spawn, log_path)

    def add(self, name: str, spawn: Callable[[], subprocess.Popen], log_path: Path) -> Child:
        """Start a child through ``spawn`` and supervise it."""
        child = Child(name, spawn, log_path, delay_s=self.backoff_s)
        child.proc = spawn()
        child.started_at = time.monotonic()
        self.children.append(child)
        return child

    def check(self, now: float | None = None) -> None:
        """Notice exited children and restart the ones whose backoff has passed."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.restart_at:
                if now >= child.restart_at:
                    self._restart(child, now)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            # what the child left behind in its session (gunicorn workers of a killed master
            # still hold its port) goes with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            if now - child.started_at >= self.stable_s:
                child.delay_s = self.backoff_s  # it had been running well: restart soon
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            print(f"cctv local: {child.name} {how}; restarting it in {child.delay_s:g}s "
                  f"(see {child.log_path})", file=self.out, flush=True)
            child.restart_at = now + child.delay_s
            child.delay_s = min(self.backoff_max_s, child.delay_s * 2)

    def _restart(self, child: Child, now: float) -> None:
        child.restart_at = 0.0
        try:
            child.proc = child.spawn()
        except Exception as exc:  # noqa: BLE001 - a failed start is retried like an exit
            print(f"cctv local: {child.name} did not start again ({exc}); retrying in "
                  f"{child.delay_s:g}s", file=self.out, flush=True)
            child.restart_at = now + child.delay_s
            child.delay_s = min(self.backoff_max_s, child.delay_s * 2)
            return
        child.started_at, child.restarts = now, child.restarts + 1
        print(f"cctv local: {child.name} restarted (pid {child.proc.pid}, restart "
              f"{child.restarts})", file=self.out, flush=True)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child's process group (last started first), then SIGKILL the rest."""
        running = [c.proc for c in reversed(self.children)
                   if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
