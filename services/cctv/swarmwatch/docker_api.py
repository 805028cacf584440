"""The Docker Engine API over the manager's unix socket: nodes, services and tasks.

Standard library only (``http.client`` on a unix socket): the swarmwatch service needs no
Docker SDK. Only ``GET`` requests are ever sent; :func:`summarize_swarm` turns the replies into
the dashboard's lists (core/swarmsnap.py's schema).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

#: the API version asked for (Docker 20.10 and later answer it)
API_VERSION = "v1.41"


class DockerUnavailable(Exception):
    """The Docker Engine API did not answer as a swarm manager; ``reason`` is one word
    (``no_socket``, ``not_manager``, ``docker_error``), the message has the details (for the
    log, never for the dashboard)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerAPI:
    """Read-only client of the Docker Engine API at the unix socket ``path``."""

    def __init__(self, path: str, timeout_s: float = 3.0) -> None:
        self.path, self.timeout_s = path, timeout_s

    def get(self, resource: str, filters: dict[str, list[str]] | None = None) -> Any:
        """``GET /<version>/<resource>`` and its JSON; raises :class:`DockerUnavailable`."""
        url = f"/{API_VERSION}/{resource}"
        if filters:
            url += "?filters=" + quote(json.dumps(filters, separators=(",", ":")))
        conn = _UnixConnection(self.path, self.timeout_s)
        try:
            conn.request("GET", url, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(16 * 1024 * 1024 + 1)
        except FileNotFoundError:
            raise DockerUnavailable("no_socket", f"no Docker socket at {self.path}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DockerUnavailable("docker_error", f"docker socket {self.path}: {exc}") from None
        finally:
            conn.close()
        if resp.status != 200:
            try:
                message = str(json.loads(body).get("message", ""))[:300]
            except (ValueError, AttributeError):
                message = body[:300].decode(errors="replace")
            reason = ("not_manager" if resp.status == 503 and "swarm" in message.lower()
                      else "docker_error")
            raise DockerUnavailable(reason, f"GET {resource}: HTTP {resp.status} {message}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DockerUnavailable("docker_error", f"GET {resource}: not JSON: {exc}") from None

    def swarm(self) -> dict:
        """``{"nodes": [...], "services": [...]}`` of the swarm, as the dashboard shows them."""
        nodes, services = self.get("nodes"), self.get("services")
        tasks = self.get("tasks", {"desired-state": ["running"]})
        if not all(isinstance(x, list) for x in (nodes, services, tasks)):
            raise DockerUnavailable("docker_error", "the Docker API answered something else "
                                    "than lists of nodes, services and tasks")
        return summarize_swarm(nodes, services, tasks)


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
