"""``cctv cameras``: list, show, add, change, remove cameras and rotate their tokens, in the
camera registry in Redis (core/registry.py). Every service sees a change within about a second,
without a restart. Connects like every service (CCTV_REDIS_URL, CCTV_REDIS_USERNAME and
password, or Sentinel); in the stack, use the ``admin`` Redis user."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from cctv.core.registry import (
    REMOVED_KEEP_S,
    Camera,
    DetectSettings,
    Registry,
    RegistryError,
    parse_mask,
    redact_url,
)


def _settings():  # noqa: ANN202 - cctv.settings.Settings, imported late
    from cctv.settings import load_settings

    return load_settings()


def _registry() -> Registry:
    from cctv.core.logs import setup_logging
    from cctv.core.redisconn import connect_settings

    setup_logging("WARNING", False, service="cameras")
    return Registry(connect_settings(_settings(), name="cctv-cameras"))


def _detect(args: argparse.Namespace, old: DetectSettings | None = None) -> DetectSettings:
    """The detection settings the flags give (on top of ``old`` for ``set``)."""
    raw = dict((old or DetectSettings()).to_json())
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
        if names == ["default"]:
            raw.pop("classes", None)
        else:
            raw["classes"] = names
    for name in ("min_conf", "min_area", "max_area"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raw.pop(name, None)  # -1 clears
            else:
                raw[name] = value
    if getattr(args, "clear_masks", False):
        raw.pop("masks", None)
    if args.mask:
        raw["masks"] = [*raw.get("masks", []),
                        *[[list(p) for p in parse_mask(m)] for m in args.mask]]
    return DetectSettings.from_json(raw)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else "-"


def _print_camera(cam: Camera) -> None:
    print(f"camera:   {cam.name}")
    print(f"source:   {redact_url(cam.source) or 'none (a sender posts its frames)'}")
    print(f"node:     {cam.node or 'any'}")
    print(f"fps:      {cam.fps if cam.fps is not None else 'default'}")
    state = "rotating (old and new valid)" if len(cam.tokens) > 1 else "one"
    print(f"tokens:   {state}{' (from CCTV_CAMERAS)' if cam.seeded else ''}")
    detect = cam.detect.to_json()
    print(f"detect:   {json.dumps(detect) if detect else 'service defaults (CCTV_CLASSES)'}")
    print(f"added:    {_when(cam.created_ms)}   changed: {_when(cam.updated_ms)}")


def _sender_hint(name: str, token: str) -> None:
    print(f"token:    {token}")
    print("          (shown once: give it to the camera's sender, e.g. on a Pi:")
    print(f"          CCTV_SENDER_CAMERA={name} CCTV_SENDER_TOKEN={token} in its env file)")


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry()
    cams = reg.all()
    if args.json:
        print(json.dumps([c.public() for c in sorted(cams.values(), key=lambda c: c.name)],
                         indent=2))
        return 0
    if not cams:
        print("no cameras in the registry (add one with `cctv cameras add NAME`)")
        return 0
    print(f"{'NAME':20} {'SOURCE':44} {'NODE':12} {'FPS':>5}  TOKENS")
    for cam in sorted(cams.values(), key=lambda c: c.name):
        src = redact_url(cam.source) or "(sender)"
        src = src if len(src) <= 44 else src[:41] + "..."
        fps = "-" if cam.fps is None else f"{cam.fps:g}"
        print(f"{cam.name:20} {src:44} {cam.node or 'any':12} {fps:>5}  "
              f"{'rotating' if len(cam.tokens) > 1 else 'one'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cam = _registry().get(args.name)
    if cam is None:
        print(f"cctv cameras: no camera {args.name!r} in the registry", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(cam.public(), indent=2))
    else:
        _print_camera(cam)
    return 0


def _token_arg(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        with open(args.token_file, encoding="utf-8") as f:
            return f.readline().strip()
    return None


def cmd_add(args: argparse.Namespace) -> int:
    reg = _registry()
    cam, token = reg.add(args.name, source=args.source, node=args.node, fps=args.fps,
                         detect=_detect(args), token=_token_arg(args))
    print(f"added camera {cam.name}")
    _print_camera(cam)
    from cctv.core.memory import worst_case

    count, assumed = len(reg.all()), worst_case(_settings()).cameras
    if count > assumed:
        print(f"warning:  the registry holds {count} cameras; the services' Redis memory check "
              f"assumes {assumed} (CCTV_CAMERAS, or CCTV_MAX_CAMERAS when not strict): check "
              "Redis maxmemory (docs/configuration.md)", file=sys.stderr)
    if not cam.source:
        _sender_hint(cam.name, token)
    else:
        print("          (the capture service pulls it; no sender needed)")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    reg = _registry()
    old = reg.get(args.name)
    if old is None:
        raise RegistryError(f"no camera {args.name!r} in the registry")
    fields: dict[str, object] = {"detect": _detect(args, old.detect)}
    if args.source is not None:
        fields["source"] = args.source or None
    if args.node is not None:
        fields["node"] = args.node or None
    if args.fps is not None:
        fields["fps"] = args.fps if args.fps > 0 else None
    cam = reg.update(args.name, **fields)
    print(f"changed camera {cam.name}")
    _print_camera(cam)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if not _registry().remove(args.name, keep_s=args.keep_data):
        print(f"cctv cameras: no camera {args.name!r} was registered or active; it is refused "
              "from now on all the same")
        return 1
    print(f"removed camera {args.name}: ingest refuses its frames, the viewer no longer lists "
          f"it, its frames and results expire in {args.keep_data} s")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    reg = _registry()
    if args.finish:
        cam = reg.finish_rotation(args.name)
        print(f"camera {cam.name}: only the newest token is valid now")
        return 0
    cam, token = reg.rotate_token(args.name, token=_token_arg(args))
    print(f"camera {cam.name}: new token added; the old one stays valid until the camera "
          "sends a frame with the new one (or `--finish`)")
    _sender_hint(cam.name, token)
    return 0


def _add_detect_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("detection settings (applied by the inference leader)")
    g.add_argument("--classes", help="comma-separated class names (or `all`; `default` = "
                   "CCTV_CLASSES) detected on this camera, e.g. person,car")
    g.add_argument("--min-conf", type=float, help="least confidence kept, 0-1 (-1 clears)")
    g.add_argument("--min-area", type=float,
                   help="least box area as a fraction of the frame, 0-1 (-1 clears)")
    g.add_argument("--max-area", type=float,
                   help="largest box area as a fraction of the frame, 0-1 (-1 clears)")
    g.add_argument("--mask", action="append", metavar="'X,Y X,Y X,Y ...'",
                   help="a polygon (frame fractions, 0-1) whose detections are ignored; "
                   "repeat for several")


def cmd_cameras(args: argparse.Namespace) -> int:
    """Run one ``cctv cameras`` action; a refused change is one line on stderr, exit 2."""
    try:
        return args.cameras_func(args)
    except (RegistryError, OSError) as exc:
        print(f"cctv cameras {args.cameras_command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - Redis unreachable and the like: one line
        from cctv.core.redisconn import REDIS_DOWN_ERRORS

        if isinstance(exc, REDIS_DOWN_ERRORS):
            print(f"cctv cameras: cannot reach Redis: {exc}", file=sys.stderr)
            return 2
        raise


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``cctv cameras`` on the CLI's subcommands."""
    sp = sub.add_parser("cameras", help="list, add, change, remove cameras; rotate tokens",
                        description=__doc__)
    sp.set_defaults(func=cmd_cameras)
    csub = sp.add_subparsers(dest="cameras_command", required=True, metavar="ACTION")
    p = csub.add_parser("list", help="every registered camera")
    p.add_argument("--json", action="store_true")
    p.set_defaults(cameras_func=cmd_list)
    p = csub.add_parser("show", help="one camera's settings (its source's password hidden)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(cameras_func=cmd_show)
    p = csub.add_parser("add", help="register a camera and print its token",
                        description="Register a camera. With --source the capture service "
                        "pulls it (rtsp://, http:// MJPEG or snapshot, a file, /dev/videoN with "
                        "--node); without, a sender posts its frames with the token printed.")
    p.add_argument("name", help="camera name (letters, digits, - and _)")
    p.add_argument("--source", help="what the capture service pulls (the sender's source "
                   "syntax, e.g. rtsp://user:pass@10.0.0.5/stream1)")
    p.add_argument("--node", help="only the capture instance on this node pulls it (USB)")
    p.add_argument("--fps", type=float, help="frames per second to pull (default 5)")
    p.add_argument("--token-file", help="use the token in this file instead of a new one")
    _add_detect_flags(p)
    p.set_defaults(cameras_func=cmd_add)
    p = csub.add_parser("set", help="change a camera's source, node, fps or detection settings")
    p.add_argument("name")
    p.add_argument("--source", help="new source ('' = none: a sender posts)")
    p.add_argument("--node", help="new node constraint ('' = any)")
    p.add_argument("--fps", type=float, help="new frame rate (0 = default)")
    p.add_argument("--clear-masks", action="store_true", help="drop every mask first")
    _add_detect_flags(p)
    p.set_defaults(cameras_func=cmd_set)
    p = csub.add_parser("remove", help="remove a camera everywhere; its data expires")
    p.add_argument("name")
    p.add_argument("--keep-data", type=int, default=REMOVED_KEEP_S, metavar="SECONDS",
                   help=f"keep its frames and results this long (default {REMOVED_KEEP_S})")
    p.set_defaults(cameras_func=cmd_remove)
    p = csub.add_parser("rotate-token", help="give a camera a new token, the old one valid "
                        "until the camera uses the new one")
    p.add_argument("name")
    p.add_argument("--finish", action="store_true", help="drop the old token now")
    p.add_argument("--token-file", help="use the token in this file instead of a new one")
    p.set_defaults(cameras_func=cmd_rotate)
