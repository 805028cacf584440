"""Run a Flask app under gunicorn (gthread workers) from Python, without a config file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication


class _App(BaseApplication):
    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self._factory, self._options = factory, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._factory()


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def use_multiprocess_metrics(workers: int, name: str) -> None:
    """With more than one worker process, switch Prometheus metrics to multiprocess mode.

    Must run before ``prometheus_client`` is first imported: it picks its value store once, at
    import, so counters created earlier would stay per-process and /metrics would show zeros.
    """
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"{name}-metrics-")


def serve(factory: Callable[[], Any], *, bind: str, workers: int, threads: int,
          name: str, timeout_s: int = 30) -> None:
    """Serve ``factory()`` with gunicorn; blocks until SIGTERM/SIGINT.

    With more than one worker process, Prometheus metrics switch to multiprocess mode so
    that ``/metrics`` reports the sum over all workers.
    """
    use_multiprocess_metrics(workers, name)
    options = {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "proc_name": name,
        "timeout": timeout_s,
        "graceful_timeout": 5,
        "keepalive": 75,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "child_exit": _child_exit if workers > 1 else None,
        # gunicorn's own request-line/header limits answer junk with 400 before Flask sees it;
        # the line limit is gunicorn's largest, so every query the OpenAPI file allows fits
        # (the event search's 200 characters percent-encode to up to 2,400 bytes), as it does
        # in nginx's 8 KB header buffers in front
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
    }
    _App(factory, {k: v for k, v in options.items() if v is not None}).run()
