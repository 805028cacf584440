"""The ``cctv`` command: one entry point for every service and tool.

    cctv local        run everything on this machine (redis, ingest, inference, web, demo camera)
    cctv ingest       the frame ingest HTTP service (gunicorn)
    cctv inference    an inference replica (leads the shards it holds, stands by for the rest)
    cctv web          the viewer and dashboard HTTP service (gunicorn)
    cctv events       the events service: zones, rules, snapshots, captions, webhooks
    cctv swarmwatch   publish nodes, services and tasks from the Docker API (a manager only)
    cctv capture      pull the cameras that have a source URL (RTSP, MJPEG) and post to ingest
    cctv token        print a new random camera token
    cctv cameras      list, add, change, remove cameras and rotate their tokens (the registry)
    cctv status       print the shards' leaders and epochs, the replicas and recent failovers
    cctv check-config validate the CCTV_* settings and exit
    cctv hash-password make a viewer account line (user:<hash>) for CCTV_VIEWERS
    cctv model prepare export YOLO weights to the fastest backend here (OpenVINO / TensorRT)
    cctv redis-acl    write the Redis ACL file (one user per service) from password files

Every service is configured with CCTV_* environment variables (see docs/configuration.md);
flags given here override them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cctv.core.logs import setup_logging
from cctv.settings import Settings, SettingsError, load_settings

log = logging.getLogger("cctv")


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    settings = load_settings(**overrides)
    setup_logging(settings.log_level, settings.log_json, service=args.command)
    return settings


def _service_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """Settings of a service that writes to Redis: also refuses to start when the worst case
    of the streams cannot fit in Redis's maxmemory (cctv/core/memory.py)."""
    from cctv.core.memory import check_memory_bound

    settings = _settings(args, **overrides)
    check_memory_bound(settings)
    return settings


def cmd_ingest(args: argparse.Namespace) -> int:
    from cctv.core.serve import serve, use_multiprocess_metrics
    from cctv.core.tokens import check_token_lengths

    s = _service_settings(args, ingest_bind=args.bind, ingest_workers=args.workers)
    check_token_lengths(s)  # one clear line here, not a worker boot failure
    use_multiprocess_metrics(s.ingest_workers, "cctv-ingest")  # before the app's counters
    from cctv.ingest.app import create_app

    serve(lambda: create_app(s), bind=s.ingest_bind, workers=s.ingest_workers,
          threads=s.ingest_threads, name="cctv-ingest")
    return 0


def cmd_inference(args: argparse.Namespace) -> int:
    from cctv.inference.service import run_inference

    s = _service_settings(args, model=args.model, role=args.role, worker_id=args.id)
    return run_inference(s)


def cmd_web(args: argparse.Namespace) -> int:
    from cctv.core.serve import serve
    from cctv.web.app import create_app

    s = _service_settings(args, web_bind=args.bind)
    from cctv.web.auth import load_accounts

    load_accounts(s)  # no viewer account: one clear line here, not a worker boot failure
    # One worker process: each annotated frame is encoded once and shared by every viewer
    # thread; MJPEG viewers are long-lived requests, so threads, not processes, scale them.
    serve(lambda: create_app(s), bind=s.web_bind, workers=1, threads=s.web_threads,
          name="cctv-web", timeout_s=120)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from cctv.events.service import run_events

    s = _service_settings(args, events_config=args.config)
    return run_events(s)


def cmd_swarmwatch(args: argparse.Namespace) -> int:
    from cctv.swarmwatch.service import check, run_swarmwatch

    s = _settings(args)
    return check(s) if args.check else run_swarmwatch(s)


# --- cctv capture ---------------------------------------------------------------------------
def cmd_capture(args: argparse.Namespace) -> int:
    from cctv.capture.service import run_capture

    s = _settings(args, capture_ingest=args.ingest, capture_http_bind=args.bind)
    return run_capture(s)


def add_capture_parser(sub: argparse._SubParsersAction) -> None:
    """The ``cctv capture`` subcommand."""
    sp = sub.add_parser("capture", help="pull the cameras that have a source URL (one instance "
                        "per node; each camera pulled by one instance at a time)")
    sp.add_argument("--ingest", help="ingest URLs, comma-separated (CCTV_CAPTURE_INGEST, "
                    "default http://127.0.0.1:8080)")
    sp.add_argument("--bind", help="host:port of /healthz, /readyz, /metrics "
                    "(CCTV_CAPTURE_HTTP_BIND, default 0.0.0.0:9300)")
    sp.set_defaults(func=cmd_capture)
# --- end of cctv capture ----------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from cctv.core.tokens import new_token

    for _ in range(args.count):
        print(new_token())
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    from cctv.local import run_local

    return run_local(args)


def cmd_status(args: argparse.Namespace) -> int:
    from cctv.status import print_status

    s = _settings(args)
    return print_status(s, as_json=args.json)


def cmd_check_config(args: argparse.Namespace) -> int:
    s = _settings(args)
    print(f"settings OK: redis={s.redis_url} cameras={sorted(s.camera_tokens)} model={s.model!r}")
    if s.events_config:  # the events rules file
        from cctv.events.config import EventsConfigError, load_config

        try:
            cfg = load_config(s.events_config)
        except EventsConfigError as exc:
            print(f"cctv check-config: {exc}", file=sys.stderr)
            return 2
        print(f"events config OK: {len(cfg.cameras)} cameras, "
              f"{sum(len(c.rules) for c in cfg.cameras.values())} rules, "
              f"{len(cfg.webhooks)} webhooks")
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from cctv.web.passwords import hash_password_command

    return hash_password_command(args.user, args.stdin)


def cmd_redis_acl(args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    from cctv.core.redis_acl import USERS, read_passwords, write_acl_file

    folder = Path(args.passwords_dir)
    if args.generate:
        folder.mkdir(parents=True, exist_ok=True)
        for user in USERS:
            f = folder / user
            if not f.exists():
                f.write_text(secrets.token_hex(24) + "\n", encoding="utf-8")
                f.chmod(0o600)
    passwords = read_passwords(folder)
    missing = [u for u in USERS if u not in passwords]
    if missing:
        print(f"cctv redis-acl: no password file for {', '.join(missing)} in {folder} "
              "(--generate creates them)", file=sys.stderr)
        return 2
    try:
        out = write_acl_file(Path(args.out), passwords)
    except ValueError as exc:
        print(f"cctv redis-acl: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: users {', '.join(passwords)}; default off")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cctv`` (all subcommands)."""
    p = argparse.ArgumentParser(prog="cctv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("ingest", help="run the frame ingest HTTP service")
    sp.add_argument("--bind", help="host:port (CCTV_INGEST_BIND, default 0.0.0.0:8080)")
    sp.add_argument("--workers", type=int, help="gunicorn worker processes (CCTV_INGEST_WORKERS)")
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("inference", help="run an inference replica (leader or warm standby)")
    sp.add_argument("--model", help="YOLO weights: .pt, .onnx or an OpenVINO dir (CCTV_MODEL)")
    sp.add_argument("--role", choices=["auto", "standby"],
                    help="auto: lead shards whose lease is free (default); standby: never lead")
    sp.add_argument("--id", help="worker id (CCTV_WORKER_ID, default node-pid)")
    sp.set_defaults(func=cmd_inference)

    sp = sub.add_parser("web", help="run the viewer and dashboard HTTP service")
    sp.add_argument("--bind", help="host:port (CCTV_WEB_BIND, default 0.0.0.0:8000)")
    sp.set_defaults(func=cmd_web)

    sp = sub.add_parser("events", help="run the events service (zones, rules, webhooks)")
    sp.add_argument("--config", help="zones/rules/webhooks file (CCTV_EVENTS_CONFIG)")
    sp.set_defaults(func=cmd_events)

    sp = sub.add_parser("swarmwatch", help="publish the swarm's nodes, services and tasks "
                        "from the Docker API into Redis (runs on a manager)")
    sp.add_argument("--check", action="store_true",
                    help="health check: exit 0 when a fresh snapshot is in Redis")
    sp.set_defaults(func=cmd_swarmwatch)

    add_capture_parser(sub)

    sp = sub.add_parser("token", help="print a new random camera token (URL-safe)")
    sp.add_argument("--count", type=int, default=1, help="how many (default 1)")
    sp.set_defaults(func=cmd_token)

    sp = sub.add_parser("local", help="run everything on this machine with a demo camera")
    sp.add_argument("--clip", help="video file the demo camera streams "
                    "(default $CCTV_SHARED/media/intersection_cctv.mp4)")
    sp.add_argument("--fps", type=float, default=10.0, help="demo camera frame rate (default 10)")
    sp.add_argument("--web-port", type=int, default=8000, help="viewer port (default 8000)")
    sp.add_argument("--ingest-port", type=int, default=8080, help="ingest port (default 8080)")
    sp.add_argument("--redis-port", type=int, default=0, help="redis port (default: a free one)")
    sp.add_argument("--standby", action="store_true",
                    help="also start a warm standby inference replica")
    sp.add_argument("--model", help="model path (default: fastest CPU model in $CCTV_SHARED)")
    sp.add_argument("--duration", type=float, default=0,
                    help="stop after this many seconds (default: run until Ctrl-C)")
    sp.add_argument("--bind-lan", action="store_true",
                    help="listen on every interface, with TLS (a self-signed certificate in "
                         "the data dir; its fingerprint is printed for cctv-sender "
                         "--pin-sha256); default: loopback only, plain HTTP")
    sp.add_argument("--config", help="a YAML file with the cameras (sources to pull, tokens "
                    "for Pi senders), viewers, events rules and settings of this install "
                    "(README, 'One box'); without it, the demo camera")
    sp.add_argument("--data-dir", help="where frames, results, events, the LAN certificate "
                    "and the logs are kept across runs (default ~/.local/share/cctv-local)")
    sp.add_argument("--viewer-user", default="admin", help="viewer login (default admin)")
    sp.add_argument("--viewer-password",
                    help="viewer password (default: a random one, printed at start)")
    sp.set_defaults(func=cmd_local)

    sp = sub.add_parser("status", help="print leader, epoch, standbys and recent failovers")
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("check-config", help="validate CCTV_* settings and exit")
    sp.set_defaults(func=cmd_check_config)

    sp = sub.add_parser("hash-password",
                        help="print a user:<hash> line for CCTV_VIEWERS (asks for the password)")
    sp.add_argument("--user", default="admin", help="user name (default admin)")
    sp.add_argument("--stdin", action="store_true",
                    help="read the password from the first line of stdin instead of asking")
    sp.set_defaults(func=cmd_hash_password)

    from cctv.model_prepare import add_parser as add_model_parser

    add_model_parser(sub)

    from cctv.cameras_cli import add_parser as add_cameras_parser

    add_cameras_parser(sub)

    sp = sub.add_parser("redis-acl", help="write the Redis ACL file from one password file per "
                        "user (docs/architecture.md, Redis)")
    sp.add_argument("--passwords-dir", required=True,
                    help="folder with one file per user (ingest, inference, web, events, capture, "
                    "sentinel, replication, admin) holding its password")
    sp.add_argument("--out", required=True, help="the ACL file to write (redis --aclfile)")
    sp.add_argument("--generate", action="store_true",
                    help="create random passwords for users without a file first")
    sp.set_defaults(func=cmd_redis_acl)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cctv`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"cctv {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
