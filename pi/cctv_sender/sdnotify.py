"""systemd's notify protocol (sd_notify), spoken directly over $NOTIFY_SOCKET.

The protocol is one datagram per message on an AF_UNIX socket whose path is in
``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``) tell the service how often systemd expects ``WATCHDOG=1``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING; does nothing when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_s = 0.0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self.errors = 0

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False if it could not be sent."""
        if self.address is None:
            return False
        msg = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
            return True
        except OSError:
            self.errors += 1
            self.close()
            return False

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (with an optional status line)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive and making progress."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """``STATUS=...``: the one line shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        """``STOPPING=1``."""
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
