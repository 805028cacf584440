"""All settings of every cctv service: the service sections combined, and how the commands
load them.

Each section lives beside its service (``core/settings.py`` holds what several read, and the
generic ``CCTV_*`` loader); :class:`Settings` inherits them all, so one object carries every
field and :func:`load_settings` refuses any ``CCTV_*`` variable that none of them reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cctv.capture.settings import CaptureSettings
from cctv.core.settings import SettingsError, load
from cctv.inference.settings import InferenceSettings
from cctv.ingest.settings import IngestSettings
from cctv.swarmwatch.settings import SwarmwatchSettings
from cctv.web.settings import WebSettings

__all__ = ["Settings", "SettingsError", "load_settings"]


@dataclass(frozen=True)
class Settings(IngestSettings, InferenceSettings, WebSettings, SwarmwatchSettings,
               CaptureSettings):
    """All configuration of every cctv service (web's section includes the events section).
    Field ``x`` is read from ``CCTV_X``."""


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default ``os.environ``).

    Keyword ``overrides`` win over the environment (used by the CLI's flags).
    Raises :class:`SettingsError` naming the first bad variable.
    """
    return load(Settings, env, overrides)
