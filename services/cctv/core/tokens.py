"""Camera tokens: how long they must be, and how to make one (`cctv token`)."""

from __future__ import annotations

import secrets

from cctv.core.settings import CoreSettings, SettingsError

#: the shortest camera token ingest accepts at start (a `cctv token` is 43 characters)
MIN_TOKEN_LENGTH = 20


def new_token() -> str:
    """A new camera token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def check_token_lengths(settings: CoreSettings) -> None:
    """Refuse to start with a camera token shorter than MIN_TOKEN_LENGTH: the message names
    the camera, never the token."""
    short = sorted(cam for cam, tok in settings.camera_tokens.items()
                   if len(tok) < MIN_TOKEN_LENGTH)
    if short:
        raise SettingsError(f"CCTV_CAMERAS: the token of camera(s) {', '.join(short)} is shorter "
                            f"than {MIN_TOKEN_LENGTH} characters; make one with `cctv token`")
    for name in ("ingest_token", "capture_token"):
        value = getattr(settings, name)
        if value and len(value) < MIN_TOKEN_LENGTH:
            raise SettingsError(f"CCTV_{name.upper()} is shorter than {MIN_TOKEN_LENGTH} "
                                "characters; make one with `cctv token`")
