"""Re-read the camera's token file when it changes, so that a rotated token (``cctv cameras
rotate-token``: old and new are both valid until the camera sends with the new one) is taken
up without restarting the sender, and not a frame is refused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("cctv_sender.token")


class TokenWatcher:
    """Checks ``path`` every ``every_s`` seconds; calls ``apply(token)`` when its content
    changed to a valid token. A missing, empty or multi-word file keeps the current token
    (logged once per change)."""

    def __init__(self, path: Path, current: str, apply: Callable[[str], None],
                 every_s: float = 1.0) -> None:
        self.path, self.current, self.apply, self.every_s = path, current, apply, every_s
        self._stop = threading.Event()
        self._complaint = ""
        self.changes = 0

    def check(self) -> bool:
        """Read the file once; True when the token changed (and was applied)."""
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self._complain(f"token file {self.path}: {exc.strerror}; keeping the current token")
            return False
        if not token or any(c.isspace() for c in token):
            self._complain(f"token file {self.path} is empty or not one word; keeping the "
                           "current token")
            return False
        self._complaint = ""
        if token == self.current:
            return False
        self.current = token
        self.apply(token)
        self.changes += 1
        log.info("token file %s changed: sending with the new token from now on", self.path)
        return True

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            log.warning("%s", message)
            self._complaint = message

    def start(self) -> TokenWatcher:
        """Check in a daemon thread until :meth:`stop`."""
        threading.Thread(target=self._run, name="token-watch", daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.check()

    def stop(self) -> None:
        """End the checks."""
        self._stop.set()
