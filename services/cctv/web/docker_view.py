"""Nodes, services and tasks of the swarm from the Docker Engine API (the docker SDK).

Used only when the manager's socket is mounted into web (read-only, optional: see
docs/deploy.md); without it the dashboard lists nodes from the services' heartbeats. Replies
are cached for a few seconds, so many dashboards cost one set of API calls.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("cctv.web.docker")


class DockerUnavailable(Exception):
    """No Docker Engine API here (no socket, not a swarm manager, SDK missing, an error)."""


def _get(d: Mapping[str, Any] | None, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, Mapping):
            return default
        d = d.get(p)
    return default if d is None else d


def summarize_swarm(nodes: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                    tasks: Iterable[Mapping[str, Any]]) -> dict:
    """Turn Docker Engine API objects (``GET /nodes``, ``/services``, ``/tasks``) into the
    dashboard's ``nodes`` and ``services`` lists."""
    node_names: dict[str, str] = {}
    out_nodes = []
    for n in nodes:
        name = _get(n, "Description", "Hostname", default=n.get("ID", "?")[:12])
        node_names[n.get("ID", "")] = name
        out_nodes.append({
            "name": name,
            "id": n.get("ID", "")[:12],
            "role": _get(n, "Spec", "Role", default="?"),
            "availability": _get(n, "Spec", "Availability", default="?"),
            "state": _get(n, "Status", "State", default="unknown"),
            "address": _get(n, "Status", "Addr", default=""),
            "manager_leader": bool(_get(n, "ManagerStatus", "Leader", default=False)),
            "reachability": _get(n, "ManagerStatus", "Reachability"),
            "labels": _get(n, "Spec", "Labels", default={}),
            "engine": _get(n, "Description", "Engine", "EngineVersion", default=""),
        })
    by_service: dict[str, list[dict]] = {}
    for t in tasks:
        if t.get("DesiredState") not in ("running", "ready", "accepted") and \
                _get(t, "Status", "State") not in ("running", "starting", "preparing"):
            continue  # history: shut down / completed tasks
        by_service.setdefault(t.get("ServiceID", ""), []).append({
            "node": node_names.get(t.get("NodeID", ""), (t.get("NodeID") or "unassigned")[:12]),
            "slot": t.get("Slot"),
            "state": _get(t, "Status", "State", default="unknown"),
            "desired": t.get("DesiredState", ""),
            "since": _get(t, "Status", "Timestamp", default=""),
            "error": _get(t, "Status", "Err", default=""),
            "message": _get(t, "Status", "Message", default=""),
        })
    out_services = []
    for s in services:
        mode = _get(s, "Spec", "Mode", default={})
        replicated = "Replicated" in mode
        svc_tasks = sorted(by_service.get(s.get("ID", ""), []),
                           key=lambda t: (t["node"], t["slot"] or 0))
        running = sum(1 for t in svc_tasks if t["state"] == "running")
        desired = (_get(mode, "Replicated", "Replicas", default=0) if replicated
                   else sum(1 for n in out_nodes if n["state"] == "ready"
                            and n["availability"] == "active"))
        out_services.append({
            "name": _get(s, "Spec", "Name", default="?"),
            "mode": "replicated" if replicated else "global",
            "desired": desired,
            "running": running,
            "image": str(_get(s, "Spec", "TaskTemplate", "ContainerSpec", "Image",
                              default="")).split("@")[0],
            "tasks": svc_tasks,
        })
    out_nodes.sort(key=lambda n: (n["role"] != "manager", n["name"]))
    out_services.sort(key=lambda s: s["name"])
    return {"nodes": out_nodes, "services": out_services}


class DockerView:
    """Reads the swarm through the Docker socket at ``socket_path`` (cached ``cache_s``)."""

    def __init__(self, socket_path: str, cache_s: float = 3.0) -> None:
        self.socket_path, self.cache_s = socket_path, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict | None, str | None] = (0.0, None, None)
        self._client = None

    def configured(self) -> bool:
        """True when the socket exists (the setting names one and it is mounted)."""
        if not self.socket_path:
            return False
        try:
            return stat.S_ISSOCK(os.stat(self.socket_path).st_mode)
        except OSError:
            return False

    def read(self) -> dict:
        """``{"nodes": [...], "services": [...]}``; raises :class:`DockerUnavailable`."""
        with self._lock:
            at, data, error = self._cached
            if time.monotonic() - at < self.cache_s:
                if data is None:
                    raise DockerUnavailable(error or "unavailable")
                return data
            try:
                data, error = self._fetch(), None
            except DockerUnavailable as exc:
                data, error = None, str(exc)
            self._cached = (time.monotonic(), data, error)
            if data is None:
                raise DockerUnavailable(error or "unavailable")
            return data

    def _fetch(self) -> dict:
        if not self.configured():
            raise DockerUnavailable(f"no Docker socket at {self.socket_path or '(disabled)'}")
        try:
            import docker.errors  # the "web" extra (the docker SDK)
        except ImportError as exc:
            raise DockerUnavailable(f"docker SDK not installed: {exc}") from None
        try:
            if self._client is None:
                self._client = docker.DockerClient(base_url=f"unix://{self.socket_path}",
                                                   timeout=3)
            api = self._client.api
            return summarize_swarm(api.nodes(), api.services(),
                                   api.tasks(filters={"desired-state": "running"}))
        except docker.errors.DockerException as exc:
            self._client = None
            msg = str(exc)
            if "not a swarm manager" in msg or "This node is not" in msg:
                msg = "this Docker engine is not a swarm manager"
            log.debug("docker API: %s", msg)
            raise DockerUnavailable(msg[:300]) from None
        except OSError as exc:
            self._client = None
            raise DockerUnavailable(f"docker socket: {exc}") from None
