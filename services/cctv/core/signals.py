"""SIGTERM and SIGINT for the long-running services: log what the service does next, set its
stop event (the service's own loop then winds down: release a lease, finish a result)."""

from __future__ import annotations

import logging
import signal
import threading


def stop_on_signals(stop: threading.Event, log: logging.Logger, then: str) -> None:
    """On SIGTERM or SIGINT: log ``received <SIG>: <then>`` and set ``stop``."""

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, then)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
