"""``cctv local``: the whole system on one machine, with a demo camera.

Starts a real redis-server (bounded: maxmemory, noeviction), ingest, inference (plus an optional
warm standby), web, nginx in front of ingest and web (as in the stack; skipped with a warning
when nginx is not installed) and a demo camera (the Pi sender streaming a sample clip, through
the proxy), prints the viewer URL, and on Ctrl-C stops everything in reverse order. A child that
exits or is killed is restarted (supervise.py): killing the inference leader shows the standby
taking over, and the run goes on.

The user's ``CCTV_*`` settings are passed to every service (a typo is refused at start), except
the addresses and Redis credentials that local mode chooses itself.

nginx listens on loopback with plain HTTP; with ``--bind-lan`` on every interface with TLS (a
self-signed certificate in the data dir; its fingerprint is printed for the senders' pin).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cctv.core.tokens import new_token
from cctv.supervise import Supervisor

REPO = Path(__file__).resolve().parents[2]
#: settings local mode chooses itself (ports, Redis and its credentials): a user's value is
#: ignored, with a note
OWNED = ("CCTV_REDIS_URL", "CCTV_REDIS_USERNAME", "CCTV_REDIS_PASSWORD", "CCTV_REDIS_SENTINELS",
         "CCTV_INGEST_BIND", "CCTV_WEB_BIND", "CCTV_EVENTS_HTTP_BIND",
         "CCTV_INFERENCE_HTTP_BIND", "CCTV_CAMERAS_FILE")


def user_settings(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The user's ``CCTV_*`` variables that local mode passes on, and the names it ignores."""
    keep, ignored = {}, []
    for name, value in environ.items():
        if not name.startswith("CCTV_") or name == "CCTV_SHARED" \
                or name.startswith("CCTV_SENDER_"):  # the demo camera is set up below
            continue
        if name in OWNED or name.removesuffix("_FILE") in OWNED:
            ignored.append(name)
        else:
            keep[name] = value
    return keep, sorted(ignored)


def _shared_dir() -> Path:
    return Path(os.environ.get("CCTV_SHARED", REPO.parent / "shared")).resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f}s")


def _default_model(shared: Path) -> str:
    for candidate in ("models/yolov8n_int8_openvino_model", "models/yolov8n_int8recon.pt"):
        if (shared / candidate).exists():
            return str(shared / candidate)
    return ""


def default_data_dir() -> Path:
    """Where ``cctv local`` keeps what outlives a run (Redis's append-only file, event
    snapshots and clips, the demo camera's sequence numbers and spool, the LAN certificate,
    the logs): $XDG_DATA_HOME/cctv-local, else ~/.local/share/cctv-local."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return Path(base) / "cctv-local"


def pi_instructions(ingest_url: str, fingerprint: str, cameras: list[str]) -> str:
    """How to point a Pi's sender at this run: its settings for each of the user's cameras
    (their tokens are the user's own: never printed), or how to add a camera."""
    if not cameras:
        return ("cctv local: to add a Pi camera, restart with CCTV_CAMERAS=<name>:<token> "
                "(make the token with `cctv token`); its sender's settings are printed then")
    lines = ["cctv local: on each Pi, /etc/cctv-sender/cctv-sender.env (pi/README.md):"]
    for cam in cameras:
        lines.append(f"  {cam}: CCTV_SENDER_INGEST={ingest_url} CCTV_SENDER_PIN_SHA256="
                     f"{fingerprint} CCTV_SENDER_CAMERA={cam} CCTV_SENDER_TOKEN=<its token>")
    return "\n".join(lines)


def run_local(args: argparse.Namespace) -> int:
    """Run the local single-machine mode until Ctrl-C (or ``--duration``)."""
    shared = _shared_dir()
    clip = Path(args.clip) if args.clip else shared / "media" / "intersection_cctv.mp4"
    model = args.model or os.environ.get("CCTV_MODEL") or _default_model(shared)
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    from cctv.localconfig import LocalConfig, LocalConfigError, load_local_config, settings_env

    cfg, rules = LocalConfig(), None
    if getattr(args, "config", None):
        try:
            cfg, rules = load_local_config(Path(args.config).expanduser())
        except LocalConfigError as exc:
            print(f"cctv local: {exc}", file=sys.stderr)
            return 2
    problems = []
    if not Path(redis_bin).exists():
        problems.append("redis-server is not installed (apt-get install redis-server)")
    if cfg.with_demo and not clip.exists():
        problems.append(f"demo clip {clip} not found (give --clip or set CCTV_SHARED)")
    if not model or not Path(model).exists():
        problems.append(f"model {model or '(none)'} not found (give --model or set CCTV_MODEL)")
    if problems:
        for p in problems:
            print(f"cctv local: {p}", file=sys.stderr)
        return 2

    from cctv.web.passwords import make_account_line

    user = getattr(args, "viewer_user", None) or "admin"
    password = getattr(args, "viewer_password", None) or secrets.token_urlsafe(12)
    data_dir = Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) \
        else default_data_dir()
    workdir = data_dir / "logs"  # the logs of this run (each child's log is appended to)
    try:
        for sub in ("logs", "redis", "events", "sender"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)  # the Redis ACL file and the certificate's key live here
    except OSError as exc:
        print(f"cctv local: data dir {data_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    redis_port = args.redis_port or _free_port()
    from cctv.core.memory import MIB, worst_case
    from cctv.proxy import Nginx, ProxyConfig, ProxyError, find_nginx
    from cctv.settings import SettingsError, load_settings

    nginx_bin = find_nginx()
    # on loopback: plain HTTP. On the LAN (--bind-lan): TLS at nginx with a self-signed
    # certificate kept in the data dir, so a sender's pinned fingerprint stays valid
    lan = bool(getattr(args, "bind_lan", False))
    listen_host = "0.0.0.0" if lan else "127.0.0.1"
    tls_cert = tls_key = fingerprint = ""
    if lan:
        if not nginx_bin:
            print("cctv local: --bind-lan needs nginx (it terminates TLS): apt-get install nginx",
                  file=sys.stderr)
            return 2
        from cctv.localtls import LocalTLSError, ensure_certificate, fingerprint_sha256

        try:
            cert, key, created = ensure_certificate(data_dir / "tls")
        except LocalTLSError as exc:
            print(f"cctv local: {exc}", file=sys.stderr)
            return 2
        tls_cert, tls_key, fingerprint = str(cert), str(key), fingerprint_sha256(cert)
        print(f"cctv local: {'created' if created else 'using'} the self-signed TLS "
              f"certificate {cert}")
    # with nginx, gunicorn listens on loopback ports of its own and nginx on the user's ports
    ingest_port = _free_port() if nginx_bin else args.ingest_port
    web_port = _free_port() if nginx_bin else args.web_port
    token = new_token()
    # the config file's settings, then the environment's (which win)
    passed, ignored = user_settings({**settings_env(cfg), **os.environ})
    if ignored:
        print(f"cctv local: not using {', '.join(ignored)}: local mode sets the addresses, "
              "Redis and its credentials itself", file=sys.stderr)
    if cfg.viewers:
        # a hash, or the whole line `cctv hash-password` prints (user:hash)
        passed["CCTV_VIEWERS"] = ",".join(f"{u}:{h.removeprefix(u + ':')}"
                                          for u, h in cfg.viewers.items())
    own_viewers = any(k in passed for k in ("CCTV_VIEWERS", "CCTV_VIEWERS_FILE"))
    # the cameras: the user's CCTV_CAMERAS, the config file's (a pulled camera gets a token of
    # this run) and the demo camera
    pulled = {name: (cam, cam.token or new_token()) for name, cam in cfg.cameras.items()
              if cam.source}
    registry = [passed.get("CCTV_CAMERAS", "")]
    registry += [f"{name}:{cam.token}" for name, cam in cfg.cameras.items() if not cam.source]
    registry += [f"{name}:{tok}" for name, (_cam, tok) in pulled.items()]
    if cfg.with_demo:
        registry.append(f"demo:{token}")
    events_rules = str(rules) if rules else (
        str(Path(__file__).resolve().parent / "events" / "demo.yaml") if cfg.with_demo else "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCTV_")}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "services"), str(REPO / "pi"),
                                                    env.get("PYTHONPATH", "")])),
        "PYTHONUNBUFFERED": "1",
        "CCTV_LOG_JSON": "false",
        # one viewer account for this run (the viewer and the API require a login)
        "CCTV_VIEWERS": make_account_line(user, password),
        # behind TLS (--bind-lan) the session cookie is Secure
        "CCTV_WEB_COOKIE_SECURE": "true" if lan else "false",
        # events: the config file's rules, else the demo camera's; web serves the snapshots
        "CCTV_EVENTS_CONFIG": events_rules,
        "CCTV_EVENTS_DIR": str(data_dir / "events"),
    })
    if own_viewers:
        del env["CCTV_VIEWERS"]
    env.update(passed)  # the user's settings win over these defaults ...
    env.update({  # ... but not over what this run has chosen
        "CCTV_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CCTV_MODEL": model,
        "CCTV_INGEST_BIND": f"127.0.0.1:{ingest_port}",
        "CCTV_WEB_BIND": f"127.0.0.1:{web_port}",
        "CCTV_CAMERAS": ",".join(filter(None, registry)),
    })
    try:
        settings = load_settings({k: v for k, v in env.items() if k.startswith("CCTV_")})
    except SettingsError as exc:
        print(f"cctv local: configuration error: {exc}", file=sys.stderr)
        return 2
    # Redis with the stack's ACL: one user per service, random passwords for this run
    from cctv.core.redis_acl import USERS, write_acl_file

    redis_passwords = {u: secrets.token_hex(16) for u in USERS}
    acl_file = write_acl_file(data_dir / "redis" / "users.acl", redis_passwords)
    env["CCTV_REDIS_URL"] = (f"redis://admin:{redis_passwords['admin']}@127.0.0.1:"
                             f"{redis_port}/0")  # for `cctv status` against this run

    def as_user(service: str) -> dict[str, str]:
        return {"CCTV_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "CCTV_REDIS_USERNAME": service,
                "CCTV_REDIS_PASSWORD": redis_passwords[service]}

    # Redis bounded like in the stack: the worst case of these settings plus room to spare
    maxmemory_mib = worst_case(settings).total // MIB + 64
    supervisor = Supervisor()
    proxy: Nginx | None = None

    def start(name: str, cmd: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        child = supervisor.command(name, cmd, {**env, **(extra or {})},
                                   workdir / f"{name}.log")
        assert child.proc is not None
        return child.proc

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    py = [sys.executable, "-m", "cctv"]
    try:
        print(f"cctv local: data in {data_dir} (kept across runs), logs in {workdir}")
        rp = start("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                             # the append-only file keeps frames, results and events
                             # across runs (fsync every second, as in the stack)
                             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                             "--dir", str(data_dir / "redis"),
                             "--maxmemory", f"{maxmemory_mib}mb",
                             "--maxmemory-policy", "noeviction", "--aclfile", str(acl_file)])
        _wait_port(redis_port, rp, "redis-server", 15)
        ip = start("ingest", [*py, "ingest"], as_user("ingest"))
        start("inference", [*py, "inference", "--id", "local-a"],
              {"CCTV_INFERENCE_HTTP_BIND": f"127.0.0.1:{_free_port()}", **as_user("inference")})
        if args.standby:
            start("inference-standby", [*py, "inference", "--id", "local-b"],
                  {"CCTV_INFERENCE_HTTP_BIND": f"127.0.0.1:{_free_port()}",
                   **as_user("inference")})
        wp = start("web", [*py, "web"], as_user("web"))
        if env["CCTV_EVENTS_CONFIG"]:
            start("events", [*py, "events"],
                  {"CCTV_EVENTS_HTTP_BIND": f"127.0.0.1:{_free_port()}", **as_user("events")})
        else:
            print("cctv local: no events rules (the config file's `events`): events are off",
                  file=sys.stderr)
        _wait_port(ingest_port, ip, "ingest")
        _wait_port(web_port, wp, "web")
        if nginx_bin:
            proxy = Nginx(ProxyConfig(
                ingest_listen=f"{listen_host}:{args.ingest_port}",
                ingest_upstream=f"127.0.0.1:{ingest_port}",
                web_listen=f"{listen_host}:{args.web_port}",
                web_upstream=f"127.0.0.1:{web_port}",
                max_body_bytes=settings.max_frame_bytes,
                client_timeout_s=settings.proxy_client_timeout_s, workers="1",
                tls_cert=tls_cert, tls_key=tls_key),
                workdir=workdir / "nginx")

            def start_nginx(nginx: Nginx = proxy) -> subprocess.Popen:
                with open(workdir / "nginx.log", "ab") as log:
                    nginx.start(stdout=log, stderr=subprocess.STDOUT)
                assert nginx.proc is not None
                return nginx.proc

            supervisor.add("nginx", start_nginx, workdir / "nginx.log")
        else:
            print("cctv local: WARNING: nginx is not installed (apt-get install nginx): ingest "
                  "and web face clients directly, and slow clients can stall them",
                  file=sys.stderr)
        scheme = "https" if lan else "http"
        # the demo camera checks the certificate like a LAN sender would (the pin); on
        # loopback it may use plain HTTP
        tls_args = ["--pin-sha256", fingerprint] if lan else ["--insecure"]
        ingest_url = f"{scheme}://127.0.0.1:{args.ingest_port}"

        def start_camera(name: str, source: str, fps: float, cam_token: str, *more: str) -> None:
            start(f"camera-{name}", [sys.executable, "-m", "cctv_sender", "--source", source,
                                     "--fps", f"{fps:g}", "--camera", name, "--ingest",
                                     ingest_url, *tls_args, *more,
                                     # sequence counters and spools live in the data dir, not
                                     # in the system sender's /var/lib/cctv-sender
                                     "--state-dir", str(data_dir / "sender")],
                  {"CCTV_SENDER_TOKEN": cam_token})

        if cfg.with_demo:
            start_camera("demo", str(clip), args.fps, token, "--loop")
        for name, (cam, cam_token) in pulled.items():
            start_camera(name, cam.source, cam.fps, cam_token, *(["--loop"] if cam.loop else []))
        host = "127.0.0.1"
        if lan:
            from cctv.localtls import lan_address

            host = lan_address() or socket.gethostname()
        login = ("log in with your CCTV_VIEWERS account" if own_viewers else
                 f"log in as {user!r} with password {password!r}")
        what = (f"camera 'demo' streams {clip.name} at {args.fps:g} fps" if cfg.with_demo
                else f"cameras: {', '.join(sorted(settings.camera_tokens))}")
        print(f"cctv local: viewer at {scheme}://{host}:{args.web_port}/  "
              f"({what}; Ctrl-C stops)\n"
              f"cctv local: {login}  "
              f"(cluster dashboard: {scheme}://{host}:{args.web_port}/cluster)\n"
              f"cctv local: the leader and its standbys: "
              f"CCTV_REDIS_URL={env['CCTV_REDIS_URL']} cctv status",
              flush=True)
        if lan:
            print(f"cctv local: ingest for cameras on the LAN: https://{host}:{args.ingest_port}"
                  f"  (cctv-sender --pin-sha256 {fingerprint})\n"
                  f"cctv local: TLS certificate SHA-256 fingerprint: {fingerprint}", flush=True)
            print(pi_instructions(f"https://{host}:{args.ingest_port}", fingerprint,
                                  sorted(set(settings.camera_tokens) - {"demo"} - set(pulled))),
                  flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stopping and (deadline is None or time.monotonic() < deadline):
            supervisor.check()  # a child that exited is logged and started again
            time.sleep(0.2)
        return 0
    except (RuntimeError, ProxyError) as exc:
        print(f"cctv local: {exc}; logs in {workdir}", file=sys.stderr)
        return 1
    finally:
        print("cctv local: stopping", flush=True)
        if proxy is not None:
            proxy.stop()
        supervisor.stop()
        print("cctv local: stopped", flush=True)
