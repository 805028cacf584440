"""The camera registry in Redis: the one list of cameras that ingest, capture, inference, web
and events read, and that ``cctv cameras`` and the admin API change.

A camera has a name, an optional source URL (what ``cctv capture`` pulls; its credentials never
leave this module in clear except to capture), an optional node constraint, an optional frame
rate, one or two valid tokens (only their SHA-256 digests are stored), and per-camera detection
settings (:class:`DetectSettings`).

Keys (core/keys.py): the hash ``cctv:cameras`` (name -> JSON entry), the hash
``cctv:cameras:removed`` (name -> removal time in ms: ingest refuses a removed camera even with
the shared ``CCTV_INGEST_TOKEN``, inside its script) and the counter ``cctv:cameras:version``
(INCR on every change, so that readers refresh their copy cheaply: :class:`RegistryCache`).

Token rotation: :meth:`Registry.rotate_token` adds a second token; both open the camera until a
frame arrives with the new one (ingest then calls :meth:`Registry.confirm_token`, which drops
the old) or ``cctv cameras rotate-token --finish`` drops it by hand. So a sender can be moved
to the new token at any time in between without a single frame refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

import redis

from cctv.core import keys
from cctv.core.settings import CAMERA_NAME_RE
from cctv.core.tokens import MIN_TOKEN_LENGTH, new_token

log = logging.getLogger("cctv.registry")

#: a camera holds at most this many valid tokens (the current one and the one replacing it)
MAX_TOKENS = 2
#: at most this many mask polygons per camera, and points per polygon
MAX_MASKS, MAX_MASK_POINTS = 16, 64
#: how long a removed camera's streams and counters are kept before they expire (seconds)
REMOVED_KEEP_S = 300


class RegistryError(ValueError):
    """A registry change that cannot be made, or an entry that is not valid; the message says
    which camera and why (never a token)."""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest the registry stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def redact_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (for logs, the CLI and the UI)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _num(raw: object, what: str, lo: float, hi: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RegistryError(f"{what} must be a number, got {raw!r}")
    value = float(raw)
    if not lo <= value <= hi:
        raise RegistryError(f"{what} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class DetectSettings:
    """Per-camera detection settings, applied by the inference leader after the model.

    ``classes``: class names (or ``all``) replacing CCTV_CLASSES for this camera; ``min_conf``:
    the least confidence kept; ``min_area`` / ``max_area``: box area as a fraction of the frame
    (0-1); ``masks``: polygons in frame fractions (x, y in 0-1) whose detections are ignored (a
    detection is in a mask when the bottom centre of its box is)."""

    classes: tuple[str, ...] | None = None
    min_conf: float | None = None
    min_area: float | None = None
    max_area: float | None = None
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()

    def to_json(self) -> dict:
        """The JSON form stored in the registry (unset fields left out)."""
        out: dict = {}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        for name in ("min_conf", "min_area", "max_area"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.masks:
            out["masks"] = [[list(p) for p in poly] for poly in self.masks]
        return out

    @property
    def is_default(self) -> bool:
        """True when nothing is set (the camera uses the service-wide settings)."""
        return not self.to_json()

    @classmethod
    def from_json(cls, raw: object, camera: str = "") -> DetectSettings:
        """Parse and check the JSON form; raises RegistryError naming the bad field."""
        where = f"camera {camera!r}: " if camera else ""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}detect settings must be an object")
        unknown = set(raw) - {"classes", "min_conf", "min_area", "max_area", "masks"}
        if unknown:
            raise RegistryError(f"{where}unknown detect setting(s): {', '.join(sorted(unknown))}")
        classes = raw.get("classes")
        if classes is not None:
            if (not isinstance(classes, list) or not classes or len(classes) > 100
                    or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in classes)):
                raise RegistryError(f"{where}classes must be a list of 1-100 class names")
            classes = tuple(c.strip() for c in classes)
        vals = {name: None if raw.get(name) is None
                else _num(raw[name], f"{where}{name}", 0.0, 1.0)
                for name in ("min_conf", "min_area", "max_area")}
        if (vals["min_area"] is not None and vals["max_area"] is not None
                and vals["min_area"] > vals["max_area"]):
            raise RegistryError(f"{where}min_area is larger than max_area")
        masks_raw = raw.get("masks") or []
        if not isinstance(masks_raw, list) or len(masks_raw) > MAX_MASKS:
            raise RegistryError(f"{where}masks must be a list of at most {MAX_MASKS} polygons")
        masks = []
        for i, poly in enumerate(masks_raw):
            if (not isinstance(poly, list) or not 3 <= len(poly) <= MAX_MASK_POINTS
                    or not all(isinstance(p, list) and len(p) == 2 for p in poly)):
                raise RegistryError(f"{where}mask {i + 1} must be a list of 3-{MAX_MASK_POINTS} "
                                    "[x, y] points")
            masks.append(tuple((_num(x, f"{where}mask {i + 1} x", 0.0, 1.0),
                                _num(y, f"{where}mask {i + 1} y", 0.0, 1.0)) for x, y in poly))
        return cls(classes=classes, masks=tuple(masks), **vals)


def parse_mask(text: str) -> tuple[tuple[float, float], ...]:
    """A mask polygon from the command line: ``x,y x,y x,y ...`` in frame fractions."""
    points = []
    for pair in text.split():
        x, sep, y = pair.partition(",")
        try:
            points.append([float(x), float(y)])
        except ValueError:
            raise RegistryError(f"mask point {pair!r} must be written x,y (0-1 each)") from None
        if not sep:
            raise RegistryError(f"mask point {pair!r} must be written x,y (0-1 each)")
    return DetectSettings.from_json({"masks": [points]}).masks[0]


@dataclass(frozen=True)
class Camera:
    """One registry entry."""

    name: str
    source: str | None = None
    node: str | None = None
    fps: float | None = None
    #: SHA-256 hex digests of the valid tokens, oldest first
    tokens: tuple[str, ...] = ()
    detect: DetectSettings = field(default_factory=DetectSettings)
    created_ms: int = 0
    updated_ms: int = 0
    #: the token comes from CCTV_CAMERAS (a changed secret changes it) until one is rotated
    #: with the CLI or the admin API
    seeded: bool = False

    def to_json(self) -> str:
        """The stored form."""
        out: dict = {"name": self.name, "tokens": list(self.tokens),
                     "created_ms": self.created_ms, "updated_ms": self.updated_ms}
        if self.seeded:
            out["seeded"] = True
        for name in ("source", "node", "fps"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if not self.detect.is_default:
            out["detect"] = self.detect.to_json()
        return json.dumps(out, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> Camera:
        """Parse and check a stored entry; raises RegistryError."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"camera {name!r}: registry entry is not JSON") from None
        if not isinstance(data, dict) or data.get("name") != name:
            raise RegistryError(f"camera {name!r}: registry entry is malformed")
        tokens = data.get("tokens", [])
        if (not isinstance(tokens, list) or len(tokens) > MAX_TOKENS
                or not all(isinstance(t, str) and len(t) == 64 for t in tokens)):
            raise RegistryError(f"camera {name!r}: registry tokens are malformed")
        source, node = data.get("source"), data.get("node")
        if source is not None and (not isinstance(source, str) or len(source) > 2048):
            raise RegistryError(f"camera {name!r}: source is malformed")
        if node is not None and (not isinstance(node, str) or not 0 < len(node) <= 128):
            raise RegistryError(f"camera {name!r}: node is malformed")
        fps = data.get("fps")
        if fps is not None:
            fps = _num(fps, f"camera {name!r}: fps", 0.01, 120.0)
        times = [data.get(k, 0) for k in ("created_ms", "updated_ms")]
        if not all(isinstance(t, int) and t >= 0 for t in times):
            raise RegistryError(f"camera {name!r}: times are malformed")
        return cls(name=name, source=source, node=node, fps=fps, tokens=tuple(tokens),
                   detect=DetectSettings.from_json(data.get("detect"), name),
                   created_ms=times[0], updated_ms=times[1], seeded=data.get("seeded") is True)

    def public(self) -> dict:
        """What the CLI and the admin API show: the source redacted, tokens only counted."""
        return {"name": self.name, "source": redact_url(self.source), "node": self.node,
                "fps": self.fps, "tokens": len(self.tokens),
                "rotating": len(self.tokens) > 1, "detect": self.detect.to_json(),
                "created_ms": self.created_ms, "updated_ms": self.updated_ms}


def check_name(name: str) -> str:
    """``name`` when it is a valid camera name; RegistryError otherwise."""
    if not isinstance(name, str) or not CAMERA_NAME_RE.fullmatch(name):
        raise RegistryError(f"camera name {name!r} must match {CAMERA_NAME_RE.pattern}")
    return name


def check_source(source: str | None) -> str | None:
    """A source URL/string the capture service can pull (the sender's source syntax)."""
    if source is None or source == "":
        return None
    if len(source) > 2048 or any(c.isspace() for c in source):
        raise RegistryError("source must be one URL or source string without spaces")
    try:
        from cctv_sender.sources import parse_source
    except ImportError:  # the sender package is not installed: leave the check to capture
        return source
    try:
        parse_source(source)
    except ValueError as exc:
        raise RegistryError(f"source {redact_url(source)!r}: {exc}") from None
    return source


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def camera_keys(camera: str) -> list[str]:
    """Every key that holds data of ``camera`` (expired when it is removed). The capture epoch
    is not one of them: it must outlive the dedup markers, or a camera added again would
    restart its seqs where old markers still stand (its frames then taken for duplicates)."""
    return [keys.frames(camera), keys.frame_index(camera), keys.detections(camera),
            keys.drops(camera), keys.stats(camera), keys.ratelimit(camera),
            keys.track_state(camera), keys.rules_state(camera), keys.line_counts(camera),
            keys.capture_lease(camera), keys.capture_floor(camera)]


class Registry:
    """Reads and changes the camera registry (every change bumps the version)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    # --- reading ---
    def version(self) -> int:
        """The registry's change counter (0 before the first change)."""
        raw = self.redis.get(keys.CAMERAS_VERSION)
        try:
            return int(raw or 0)
        except ValueError:
            return 0

    def all(self) -> dict[str, Camera]:
        """Every valid entry by name; a malformed one is logged and left out."""
        out: dict[str, Camera] = {}
        for raw_name, raw in self.redis.hgetall(keys.CAMERAS_REGISTRY).items():
            name = raw_name.decode(errors="replace") if isinstance(raw_name, bytes) else raw_name
            try:
                out[check_name(name)] = Camera.from_json(name, raw)
            except RegistryError as exc:
                log.error("camera registry: %s; entry ignored (fix it with `cctv cameras "
                          "remove` and `add`)", exc)
        return out

    def get(self, name: str) -> Camera | None:
        """The entry of ``name``, or None."""
        raw = self.redis.hget(keys.CAMERAS_REGISTRY, check_name(name))
        return None if raw is None else Camera.from_json(name, raw)

    def removed(self) -> dict[str, int]:
        """Removed camera names -> removal time (ms)."""
        out = {}
        for k, v in self.redis.hgetall(keys.CAMERAS_REMOVED).items():
            try:
                out[k.decode() if isinstance(k, bytes) else k] = int(v)
            except ValueError:
                continue
        return out

    # --- changing ---
    def _change(self, name: str, change) -> Camera | None:  # noqa: ANN001 - a callable
        """Apply ``change(old_entry_or_None) -> new_entry_or_None`` atomically (WATCH on the
        registry hash); None removes the entry. Returns the new entry."""
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.CAMERAS_REGISTRY)
                    raw = pipe.hget(keys.CAMERAS_REGISTRY, name)
                    old = None if raw is None else Camera.from_json(name, raw)
                    new = change(old)
                    pipe.multi()
                    if new is None:
                        pipe.hdel(keys.CAMERAS_REGISTRY, name)
                    else:
                        pipe.hset(keys.CAMERAS_REGISTRY, name, new.to_json())
                        pipe.hdel(keys.CAMERAS_REMOVED, name)
                    pipe.incr(keys.CAMERAS_VERSION)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def add(self, name: str, *, source: str | None = None, node: str | None = None,
            fps: float | None = None, detect: DetectSettings | None = None,
            token: str | None = None) -> tuple[Camera, str]:
        """Register a new camera; returns it and its token (a new one unless ``token`` is
        given). RegistryError when the name is taken."""
        check_name(name)
        source = check_source(source)
        if fps is not None:
            _num(fps, "fps", 0.01, 120.0)
        token = token or new_token()
        if len(token) < MIN_TOKEN_LENGTH:
            raise RegistryError(f"a camera token must be at least {MIN_TOKEN_LENGTH} characters")
        now = _now_ms()
        cam = Camera(name=name, source=source, node=node or None, fps=fps,
                     tokens=(token_digest(token),), detect=detect or DetectSettings(),
                     created_ms=now, updated_ms=now)

        def change(old: Camera | None) -> Camera:
            if old is not None:
                raise RegistryError(f"camera {name!r} is already registered (see `cctv cameras "
                                    "show`)")
            return cam

        self._change(name, change)
        # a camera removed and added again starts with fresh keys, none left to expire
        for key in camera_keys(name):
            self.redis.persist(key)
        log.info("camera %s added (source %s)", name, redact_url(source) or "none: a sender "
                 "posts its frames")
        return cam, token

    def update(self, name: str, **fields: object) -> Camera:
        """Change ``source``, ``node``, ``fps`` or ``detect`` of a registered camera."""
        allowed = {"source", "node", "fps", "detect"}
        if set(fields) - allowed:
            raise RegistryError(f"cannot change {', '.join(sorted(set(fields) - allowed))}")
        if "source" in fields:
            fields["source"] = check_source(fields["source"])  # type: ignore[arg-type]
        if fields.get("fps") is not None:
            _num(fields["fps"], "fps", 0.01, 120.0)

        def change(old: Camera | None) -> Camera:
            if old is None:
                raise RegistryError(f"no camera {name!r} in the registry")
            return replace(old, updated_ms=_now_ms(), **fields)  # type: ignore[arg-type]

        return self._change(check_name(name), change)  # type: ignore[return-value]

    def remove(self, name: str, keep_s: int = REMOVED_KEEP_S) -> bool:
        """Remove ``name``: from the registry and the active cameras, refused by ingest from
        now on, its streams and counters expiring after ``keep_s``. False if it was unknown."""
        check_name(name)
        existed = self.redis.hexists(keys.CAMERAS_REGISTRY, name) or self.redis.sismember(
            keys.CAMERAS_ACTIVE, name)
        pipe = self.redis.pipeline()
        pipe.hdel(keys.CAMERAS_REGISTRY, name)
        pipe.hset(keys.CAMERAS_REMOVED, name, _now_ms())
        pipe.srem(keys.CAMERAS_ACTIVE, name)
        for key in camera_keys(name):
            pipe.expire(key, max(1, keep_s))
        pipe.incr(keys.CAMERAS_VERSION)
        pipe.execute()
        log.info("camera %s removed; its data expires in %d s", name, keep_s)
        return bool(existed)

    def rotate_token(self, name: str, token: str | None = None) -> tuple[Camera, str]:
        """Add a new token beside the current one; returns the entry and the new token.
        RegistryError when a rotation is already under way (finish it first)."""
        token = token or new_token()
        if len(token) < MIN_TOKEN_LENGTH:
            raise RegistryError(f"a camera token must be at least {MIN_TOKEN_LENGTH} characters")
        digest = token_digest(token)

        def change(old: Camera | None) -> Camera:
            if old is None:
                raise RegistryError(f"no camera {name!r} in the registry")
            if len(old.tokens) >= MAX_TOKENS:
                raise RegistryError(f"camera {name!r} is already rotating its token; finish "
                                    f"that with `cctv cameras rotate-token --finish {name}`")
            return replace(old, tokens=(*old.tokens, digest), updated_ms=_now_ms(),
                           seeded=False)

        cam = self._change(check_name(name), change)
        log.info("camera %s: new token added; the old one stays valid until the camera sends "
                 "with the new one", name)
        return cam, token  # type: ignore[return-value]

    def finish_rotation(self, name: str) -> Camera:
        """Keep only the newest token of ``name``."""
        def change(old: Camera | None) -> Camera:
            if old is None:
                raise RegistryError(f"no camera {name!r} in the registry")
            return replace(old, tokens=old.tokens[-1:], updated_ms=_now_ms())

        return self._change(check_name(name), change)  # type: ignore[return-value]

    def confirm_token(self, name: str, digest: str) -> bool:
        """The camera sent with the token of ``digest``: when that is the newest of a rotation,
        drop the older one. True when a token was dropped."""
        dropped = []

        def change(old: Camera | None) -> Camera | None:
            dropped.clear()
            if old is None or len(old.tokens) < 2 or old.tokens[-1] != digest:
                raise _Unchanged
            dropped.append(True)
            return replace(old, tokens=(digest,), updated_ms=_now_ms())

        try:
            self._change(name, change)
        except _Unchanged:
            return False
        log.info("camera %s sent with its new token: the old token is no longer valid", name)
        return bool(dropped)

    def seed(self, tokens: Mapping[str, str]) -> list[str]:
        """Register each camera of ``tokens`` (name -> token, the CCTV_CAMERAS secret) that is
        not removed; returns the names added or whose token changed. A camera seeded before
        takes the secret's token when it changed; one whose token was rotated with the CLI
        keeps the registry's (the secret's token is then logged as ignored)."""
        removed = self.removed()
        changed: list[str] = []
        for name, token in tokens.items():
            if name in removed:
                continue
            digest = token_digest(token)

            def change(old: Camera | None, name: str = name, digest: str = digest) -> Camera:
                now = _now_ms()
                if old is None:
                    return Camera(name=name, tokens=(digest,), created_ms=now, updated_ms=now,
                                  seeded=True)
                if digest in old.tokens:
                    raise _Unchanged
                if not old.seeded:
                    log.warning("camera %s: CCTV_CAMERAS gives a token the registry does not "
                                "have; the registry's token stays (change it with `cctv "
                                "cameras rotate-token %s`)", name, name)
                    raise _Unchanged
                return replace(old, tokens=(digest,), updated_ms=now)

            try:
                self._change(name, change)
                changed.append(name)
            except _Unchanged:
                pass
        if changed:
            log.info("camera registry seeded from CCTV_CAMERAS: %s", ", ".join(changed))
        return changed


class _Unchanged(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    """A copy of the registry at one version."""

    cameras: dict[str, Camera]
    removed: frozenset[str]
    version: int
    #: False until the registry could be read once (then the static settings apply)
    loaded: bool


class RegistryCache:
    """A process's copy of the registry, refreshed when the version changed: at most every
    ``max_age_s`` it reads the version (one GET), and reads the entries only when it moved.
    ``snapshot(force=True)`` reads the version now (one GET, one caller at a time) and the
    entries only when it moved: a camera added a moment ago is known at once, and a flood of
    unknown tokens costs one GET each, never a read of the whole registry."""

    def __init__(self, client: redis.Redis, max_age_s: float = 1.0) -> None:
        self.registry = Registry(client)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._snap = Snapshot({}, frozenset(), -1, False)
        self._checked = -1e9

    def invalidate(self) -> None:
        """Read the registry again at the next :meth:`snapshot` (after this process changed
        it: its own change must count at once, whatever the throttle)."""
        with self._lock:
            self._checked = -1e9
            self._snap = replace(self._snap, version=-1)

    def snapshot(self, force: bool = False) -> Snapshot:
        """The current copy (refreshed first when due); a Redis error keeps the old copy."""
        if time.monotonic() - self._checked < self.max_age_s and not force:
            return self._snap
        with self._lock:
            if not force and time.monotonic() - self._checked < self.max_age_s:
                return self._snap  # another thread refreshed it meanwhile
            self._checked = time.monotonic()
            try:
                version = self.registry.version()
                if version != self._snap.version or not self._snap.loaded:
                    self._snap = Snapshot(self.registry.all(),
                                          frozenset(self.registry.removed()), version, True)
            except redis.RedisError as exc:
                log.warning("camera registry not readable (%s); using the copy of version %d",
                            exc, self._snap.version)
        return self._snap



def active_cameras(client: redis.Redis) -> list[str]:
    """Cameras that have sent frames and are not removed, sorted (what the viewer lists)."""
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.CAMERAS_ACTIVE)
    pipe.hkeys(keys.CAMERAS_REMOVED)
    active, removed = pipe.execute()
    gone = {r.decode(errors="replace") for r in removed}
    return sorted(c for c in (a.decode(errors="replace") for a in active) if c not in gone)


def is_active(client: redis.Redis, camera: str) -> bool:
    """True when ``camera`` has sent frames and is not removed."""
    pipe = client.pipeline(transaction=False)
    pipe.sismember(keys.CAMERAS_ACTIVE, camera)
    pipe.hexists(keys.CAMERAS_REMOVED, camera)
    active, removed = pipe.execute()
    return bool(active) and not removed
