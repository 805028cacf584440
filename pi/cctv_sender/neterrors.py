"""One short wording for network errors, shared by the ingest client and the network sources."""

from __future__ import annotations

import socket


def describe_error(exc: BaseException) -> str:
    """A short human description of a connection error (``timed out``, ``connection
    refused``, ...) for log lines and ``--check`` output."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
