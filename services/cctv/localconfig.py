"""``cctv local --config FILE``: the cameras, viewers, rules and settings of a one-box install.

A YAML (or JSON) file::

    cameras:
      frontdoor:                   # pulled by local mode itself (a sender process per camera)
        source: rtsp://user:password@192.168.1.20:554/stream1
        fps: 5
      yard: {source: /srv/cctv/yard.mp4, loop: true}   # a video file, played again and again
      garage:                      # a Pi's sender posts here with this token
        token: <from cctv token>
    viewers:                       # lines of `cctv hash-password`
      alice: "scrypt:32768:8:1$..."
    events: rules.yaml             # the events rules file (docs/events.md), next to this one
    settings:                      # any CCTV_* setting, without the prefix
      imgsz: 320
    demo: false                    # the demo camera too (default: only without cameras)

Every mistake is one line naming the file, the path to the field and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from cctv.core.tokens import MIN_TOKEN_LENGTH
from cctv.core.wire import CAMERA_NAME_RE


class LocalConfigError(ValueError):
    """The config file cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CameraName = Annotated[str, StringConstraints(pattern=f"^(?:{CAMERA_NAME_RE.pattern})$")]


class Camera(_Model):
    """One camera: local mode pulls ``source``, or a sender posts with ``token``."""

    source: str = ""
    # what ingest takes (core/tokens.py), in characters that cannot break the camera:token list
    token: Annotated[str, StringConstraints(min_length=MIN_TOKEN_LENGTH,
                                            pattern=r"^[A-Za-z0-9_\-.~]+$")] | None = None
    fps: Annotated[float, Field(gt=0, le=60)] = 10.0
    #: a video file as the source: play it again at its end
    loop: bool = False


class LocalConfig(_Model):
    """The whole file."""

    cameras: dict[CameraName, Camera] = {}
    viewers: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")],
                  Annotated[str, StringConstraints(min_length=10)]] = {}
    events: str = ""
    settings: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")],
                   str | int | float | bool] = {}
    demo: bool | None = None

    @model_validator(mode="after")
    def _each_camera_has_a_way_in(self) -> LocalConfig:
        for name, cam in self.cameras.items():
            if not cam.source and not cam.token:
                raise ValueError(f"camera {name}: give a source (local mode pulls it) or a "
                                 "token (a sender posts with it)")
        return self

    @property
    def with_demo(self) -> bool:
        """Whether the demo camera runs too."""
        return not self.cameras if self.demo is None else self.demo


def _where(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def load_local_config(path: Path) -> tuple[LocalConfig, Path | None]:
    """The config in ``path`` and the events rules file it names (resolved next to it).
    Raises :class:`LocalConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise LocalConfigError(f"{path}: not valid {kind}: {exc}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LocalConfigError(f"{path}: expected a mapping at the top level")
    try:
        cfg = LocalConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise LocalConfigError(f"{path}: {_where(err)}: {msg}") from None
    rules = None
    if cfg.events:
        rules = (path.parent / cfg.events).resolve()
        if not rules.is_file():
            raise LocalConfigError(f"{path}: events: no such file {rules}")
    return cfg, rules


def settings_env(cfg: LocalConfig) -> dict[str, str]:
    """The ``settings`` section as ``CCTV_*`` variables."""
    def text(v: object) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return {f"CCTV_{k.upper()}": text(v) for k, v in cfg.settings.items()}
