"""Is the wall clock synchronised yet? Pi Zero to 4 have no real-time clock: until NTP has
set the time after boot, the clock starts from the last shutdown (fake-hwclock) or 1970."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable

#: written by systemd-timesyncd once it has synchronised the clock
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
_TIME_ERROR = 5  # adjtimex(2): the kernel clock is not synchronised


def _kernel_synced() -> bool | None:
    """The kernel's view (adjtimex, as systemd-time-wait-sync uses), None if unavailable."""
    try:
        # the process's own symbols include libc's (find_library would run ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: only read
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class ClockSync:
    """``synced()`` turns True once the clock is synchronised and stays True; it looks again
    at most every ``recheck_s`` seconds (cheap enough to call for every frame)."""

    def __init__(self, flag_path: str = TIMESYNC_FLAG, recheck_s: float = 5.0,
                 kernel: Callable[[], bool | None] = _kernel_synced) -> None:
        self.flag_path, self.recheck_s, self._kernel = flag_path, recheck_s, kernel
        self._synced = False
        self._next_check = 0.0

    def synced(self) -> bool:
        """Whether capture times from the wall clock can be trusted."""
        if self._synced:
            return True
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.recheck_s
            self._synced = os.path.exists(self.flag_path) or bool(self._kernel())
        return self._synced
