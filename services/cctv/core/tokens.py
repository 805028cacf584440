"""Camera tokens: how long they must be, and how to make one (`cctv token`)."""

from __future__ import annotations

import secrets

#: the shortest camera token ingest accepts at start (a `cctv token` is 43 characters)
MIN_TOKEN_LENGTH = 20


def new_token() -> str:
    """A new camera token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)
