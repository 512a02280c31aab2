"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

There is no engine on the machines this project is built on, so the file is
read and each of our own services (sandbox, worker, beat, flower, dashboard,
receiver)
is run as its container would run it: a non-root user, a read-only working
directory holding the source, the compose environment with the service names
(redis, postgres, sandbox) pointing at this machine, and each volume a
writable directory of its own. Each must stay up and pass its own health
check, run as written. The redis and postgres services are images; the test
run's own Redis and PostgreSQL stand in for them.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import REDIS_URL, ROOT, postgres_schema, wait_for
from worker.secrets import generate_key

pytestmark = pytest.mark.integration

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
OURS = ("sandbox", "worker", "beat", "flower", "dashboard", "receiver")
IMAGE_WORKDIR = "/app"
DATA_DIR = "/var/lib/entity-sync"  # the image's writable data dir (Dockerfile)
UPSTREAM_SECRET = "compose-upstream-secret-0123"


# -- reading the file as Compose does ------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution ($$, ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}), everywhere."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        present = name in env
        empty = not env.get(name)
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else not present) else env[name]
        if op in (":?", "?") and (empty if op == ":?" else not present):
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The whole file, merge keys resolved and interpolated (Compose does all of it at load)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    return {k: v for k, v in interpolate(raw, env).items() if not k.startswith("x-")}


def service_environment(service: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """A service's container environment: a key without a value is passed through, or unset."""
    result: dict[str, str] = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            if key in env:
                result[key] = env[key]
        else:
            result[key] = str(value)
    return result


# -- the file, read ------------------------------------------------------------------------


def test_the_whole_file_loads_without_any_variable_set() -> None:
    """Compose interpolates every service for every command: nothing may be required."""
    compose = load_compose({})
    assert set(compose["services"]) == {"redis", "postgres", *OURS}
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{[A-Za-z_0-9]+:?\?", text), "a required ${VAR:?} blocks every command"


def test_the_secret_goes_to_the_worker_alone() -> None:
    compose = load_compose({})
    env = {"ENTITY_SYNC_SECRET_KEY": "k", "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET": "u"}
    for name, service in compose["services"].items():
        environment = service_environment(service, env)
        assert ("ENTITY_SYNC_SECRET_KEY" in environment) == (name == "worker"), name
        has_upstream_secret = "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET" in environment
        assert has_upstream_secret == (name == "receiver"), name


def test_every_service_has_a_healthcheck_and_loopback_ports() -> None:
    compose = load_compose({})
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dependency in service.get("depends_on") or {}:
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis_service = load_compose({})["services"]["redis"]
    command = redis_service["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).split(":")[1] == "/data" for v in redis_service["volumes"])


def test_worker_uses_the_recommended_pool() -> None:
    command = load_compose({})["services"]["worker"]["command"]
    assert "--pool=threads" in command  # BENCHMARKS.md: prefork can't reach I/O concurrency
    assert "--concurrency=16" in command  # docs/operating.md's recommendation


def test_worker_scales_by_replicas_and_gets_time_for_a_warm_shutdown() -> None:
    """One worker process per core: one replica each (docs/operating.md, "Queues, workers")."""
    assert load_compose({})["services"]["worker"]["deploy"]["replicas"] == "1"
    four = load_compose({"ENTITY_SYNC_WORKER_REPLICAS": "4"})["services"]["worker"]
    assert int(four["deploy"]["replicas"]) == 4
    grace = four["stop_grace_period"]
    assert grace.endswith("m") and int(grace[:-1]) * 60 > 120, "longer than a slice's budget"
    for name in ("beat", "flower", "dashboard", "receiver"):  # one of each, whatever N
        assert "deploy" not in load_compose({})["services"][name], name


def test_beat_writes_its_schedule_to_its_volume() -> None:
    beat = load_compose({})["services"]["beat"]
    schedule = next(a.split("=", 1)[1] for a in beat["command"] if a.startswith("--schedule="))
    mounts = [str(v).split(":")[1] for v in beat["volumes"]]
    assert any(schedule.startswith(m.rstrip("/") + "/") for m in mounts), (schedule, mounts)


def test_dockerfile_caches_dependencies_runs_as_non_root_and_bakes_no_credentials() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY")]
    source_copy = next(i for i in copies if "worker" in lines[i])
    dependency_install = next(
        i for i, line in enumerate(lines) if line.startswith("RUN") and "pip" in line
    )
    assert lines[copies[0]] == "COPY pyproject.toml ./"
    assert copies[0] < dependency_install < source_copy, "dependencies before the source"
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    for line in lines:
        if line.startswith("ENV"):
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", line), f"credentials in {line}"
            assert "PASSWORD" not in line.upper() and "SECRET" not in line.upper(), line
    assert any(DATA_DIR in line and "chown" in line for line in lines), "a writable data dir"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored[0] == "*", ".dockerignore: an allow-list (no .venv, .git, var/ in the context)"


def test_the_dependency_layer_installs_every_dependency_of_pyproject(tmp_path: Path) -> None:
    """The Dockerfile's first RUN reads pyproject.toml alone; run it with pip replaced by echo."""
    text = DOCKERFILE.read_text().replace("\\\n", "")
    run = next(line for line in text.splitlines() if line.startswith("RUN python -c"))
    code = shlex.split(run.removeprefix("RUN "))[2]
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    printed = subprocess.run(
        [sys.executable, "-c", code.replace("subprocess.check_call(", "print(*")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["flower"]]
    assert printed[1:4] == ["-m", "pip", "install"]
    assert printed[4:] == wanted


# -- the services, run as their containers would ------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Container:
    """One compose service run as a process the way its container would run it."""

    name: str
    argv: list[str]
    healthcheck: list[str]
    env: dict[str, str]
    cwd: Path
    prefix: list[str]  # runs what follows as the containers' user
    uid: int | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    checks: list[str] = field(default_factory=list)

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command in this container (``docker compose exec``)."""
        return subprocess.run(
            [*self.prefix, *argv],
            input=stdin,
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> Container:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *self.argv],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """Run the service's own healthcheck command, as Docker does inside the container."""
        kind, *rest = self.healthcheck
        done = self.run(*(["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest))
        self.checks.append(f"exit {done.returncode}: {(done.stdout + done.stderr)[-500:]}")
        return done.returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)

    def report(self) -> str:
        log = self.log_path.read_text(errors="replace")[-3000:]
        return f"--- {self.name}: last checks {self.checks[-2:]}\n{log}"


def run_as() -> tuple[int | None, int | None]:
    """Whom the containers run as: ``nobody`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None, None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def read_only_copy_of_the_source(parent: Path) -> Path:
    """What the image's /app holds (.dockerignore's allow-list), owned by root, read-only."""
    app = parent / "app"
    app.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, app / name)
    for package in ("worker", "tasks"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [app, *app.rglob("*")]:
        mode = 0o555 if path.is_dir() else 0o444
        path.chmod(mode)
    return app


def _runs(prefix: list[str], app: Path) -> str | None:
    """None when the test venv's Python imports our services' packages under ``prefix``."""
    done = subprocess.run(
        [*prefix, sys.executable, "-c", "import celery, flower, worker.ops.cli"],
        cwd=app,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(app)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-1500:]


def as_container_user(app: Path) -> list[str]:
    """The command prefix that runs a process as the containers' non-root user.

    As root: ``nobody`` through setpriv, without supplementary groups. A venv
    made from a Python under a root-only home (pyenv in /root, as on this
    project's machines) cannot be run by nobody; then the process also keeps
    CAP_DAC_READ_SEARCH, which lets it read and traverse what the image would
    have world-readable (the interpreter) and nothing more: every write still
    needs nobody's own permission, which is what this test is about.
    Not root: ourselves, already non-root.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (Debian: util-linux) is needed to run the services as non-root"
    nobody = pwd.getpwnam("nobody")
    prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    if _runs([*prefix, "--"], app) is None:
        return [*prefix, "--"]
    reader = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    why = _runs([*prefix, *reader, "--"], app)
    assert why is None, f"nobody cannot run {sys.executable} with the source: {why}"
    return [*prefix, *reader, "--"]


def map_to_this_machine(value: str, sandbox_port: int, store_url: str) -> str:
    """Service names as Compose's network resolves them, pointed at this machine's stand-ins."""
    parts = urlsplit(value)
    if parts.scheme == "redis" and parts.hostname == "redis":
        return REDIS_URL
    if parts.scheme.startswith("postgres") and parts.hostname == "postgres":
        return store_url
    if parts.hostname == "sandbox":
        return f"{parts.scheme}://127.0.0.1:{sandbox_port}{parts.path}"
    return value


def map_port(arg: str, container_port: str, port: int) -> str:
    """``arg`` with the container's port number replaced by this machine's ``port``.

    Whole numbers only: another service's free port that holds the digits
    (the sandbox on 55557 beside flower's 5555) stays as it is.
    """
    return re.sub(rf"(?<!\d){container_port}(?!\d)", str(port), arg)


def test_a_port_is_mapped_only_where_it_is_a_whole_number() -> None:
    assert map_port("--port=5555", "5555", 40123) == "--port=40123"
    assert map_port("http://127.0.0.1:5555/x", "5555", 40123) == "http://127.0.0.1:40123/x"
    # The flake this fixed: the sandbox's port 55557 turned into an invalid one.
    assert map_port("http://127.0.0.1:55557", "5555", 40123) == "http://127.0.0.1:55557"
    assert map_port("http://127.0.0.1:15555", "5555", 40123) == "http://127.0.0.1:15555"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Container]]:
    uid, gid = run_as()
    # tmp_path's parents may be private to root: the containers' files live in a
    # directory anyone can traverse, as / is inside a container.
    root = Path(tempfile.mkdtemp(prefix="es-compose-"))
    root.chmod(0o755)
    app = read_only_copy_of_the_source(root)
    venv_bin = Path(sys.executable).parent
    prefix = as_container_user(app)
    outer_env = {  # from .env
        "ENTITY_SYNC_SECRET_KEY": generate_key(),  # `entity-sync keygen`
        "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET": UPSTREAM_SECRET,
    }
    compose = load_compose(outer_env)
    ports = {
        "sandbox": free_port(),
        "flower": free_port(),
        "dashboard": free_port(),
        "receiver": free_port(),
    }
    container_ports = {"sandbox": "8900", "flower": "5555", "dashboard": "8901", "receiver": "8902"}
    containers: dict[str, Container] = {}
    with postgres_schema() as store_url:
        for name in OURS:
            service = compose["services"][name]
            volume_dirs = {}
            for volume in service.get("volumes", []):
                target = str(volume).split(":")[1]
                writable = root / f"volume-{name}-{len(volume_dirs)}"
                writable.mkdir()
                if uid is not None:
                    os.chown(writable, uid, gid or -1)
                volume_dirs[target] = str(writable)
            home = root / f"home-{name}"
            home.mkdir()
            if uid is not None:
                os.chown(home, uid, gid or -1)

            def adapt(arg: str, name: str = name, volume_dirs: dict[str, str] = volume_dirs) -> str:
                # Each container has its own ports and filesystem; here they
                # share one machine: map its port to a free one and its volume
                # mounts to their directories.
                if name in ports:
                    arg = map_port(arg, container_ports[name], ports[name])
                for target, directory in volume_dirs.items():
                    arg = arg.replace(target, directory)
                return arg

            env = {
                "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(home),
                "HOSTNAME": socket.gethostname(),  # Docker sets it to the container's name
                "PYTHONPATH": str(app),  # the image's package is /app's source
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "ENTITY_SYNC_STORE_URL": f"sqlite:///{DATA_DIR}/entity-sync.db",  # the image's
            }
            for key, value in service_environment(service, outer_env).items():
                env[key] = map_to_this_machine(value, ports["sandbox"], store_url)
            env = {k: adapt(v) for k, v in env.items()}
            containers[name] = Container(
                name=name,
                argv=[adapt(a) for a in service["command"]],
                healthcheck=[adapt(a) for a in service["healthcheck"]["test"]],
                env=env,
                cwd=app,
                prefix=prefix,
                uid=uid,
                log_path=root / f"{name}.log",
            )
        try:
            yield containers
        finally:
            for container in containers.values():
                container.stop()
            for path in [app, *app.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)


def test_each_service_stays_up_and_passes_its_healthcheck(stack: dict[str, Container]) -> None:
    for container in stack.values():
        container.start()
    try:
        for container in stack.values():
            wait_for(
                lambda c=container: (c.alive() or _dead(c)) and c.healthy(),
                90,
                f"{container.name} healthy",
            )
        time.sleep(5)  # still up a while later, and still healthy
        for container in stack.values():
            assert container.alive(), container.report()
            assert container.healthy(), container.report()
            if container.uid is not None and container.proc is not None:
                status = Path(f"/proc/{container.proc.pid}/status").read_text()
                real_uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
                assert real_uid.split()[1:] == [str(container.uid)] * 4, real_uid
        # Beat wrote its schedule to its volume, nothing to the read-only /app.
        beat_schedule = next(
            a.split("=", 1)[1] for a in stack["beat"].argv if a.startswith("--schedule=")
        )
        assert list(Path(beat_schedule).parent.glob("celerybeat-schedule*"))
        assert not list(stack["beat"].cwd.glob("celerybeat-schedule*"))

        # The dashboard, bound to every address for its published port, still
        # answers only requests that name a loopback host.
        port = int(stack["dashboard"].argv[stack["dashboard"].argv.index("--port") + 1])
        for host, expected in (("127.0.0.1", 200), ("localhost:8901", 200), ("evil.test", 403)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/status", headers={"Host": host})
            assert conn.getresponse().status == expected, host
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/api/status", body=b"")
        assert conn.getresponse().status == 405  # read-only

        # The compose-wired worker syncs from the compose-wired sandbox.
        worker = stack["worker"]
        token = "demo-acme"  # a connection of the sandbox's default preset
        added = worker.run(
            "entity-sync",
            "connections",
            "add",
            "acme",
            "--token-stdin",
            "--entity",
            "sites",
            stdin=token,
        )
        assert added.returncode == 0, added.stderr
        synced = worker.run("entity-sync", "sync", "acme", "--wait", "--timeout", "90")
        assert synced.returncode == 0, synced.stdout + synced.stderr + worker.report()

        # The compose-wired receiver keeps a signed event of the unified API,
        # refuses a forged one, and the worker acts on it (the preflight of the
        # sync above learned the connection's upstream id).
        receiver_port = int(stack["receiver"].argv[stack["receiver"].argv.index("--port") + 1])
        upstream_id = worker.run(
            "python", "-c",
            "from worker.runtime import runtime; "
            "print(runtime().store.upstream_connection_id('acme'))",
        ).stdout.strip()  # fmt: skip
        body = json.dumps(
            {
                "id": "evt_compose_1",
                "type": "sync.failed",
                # From the clock: the receiver refuses an event outside its freshness window.
                "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "connection_id": upstream_id,
                "data": {"entity_types": ["sites"], "message": "refresh failed"},
            }
        ).encode()
        good = "sha256=" + hmac.new(UPSTREAM_SECRET.encode(), body, hashlib.sha256).hexdigest()
        for signature, expected in (("sha256=" + "0" * 64, 401), (good, 202)):
            conn = http.client.HTTPConnection("127.0.0.1", receiver_port, timeout=10)
            conn.request(
                "POST", "/upstream/webhooks", body=body, headers={"X-Webhook-Signature": signature}
            )
            assert conn.getresponse().status == expected
            conn.close()
        wait_for(
            lambda: "refresh failed" in worker.run("entity-sync", "status", "acme").stdout,
            30,
            "the receiver's event in the worker's status",
        )
    except AssertionError as exc:
        reports = "\n".join(c.report() for c in stack.values())
        raise AssertionError(f"{exc}\n{reports}") from exc


def _dead(container: Container) -> bool:
    raise AssertionError(f"{container.name} exited\n{container.report()}")


def test_the_receiver_without_its_secret_says_why(stack: dict[str, Container]) -> None:
    receiver = stack["receiver"]
    receiver.env.pop("ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET")
    receiver.start()
    assert receiver.proc is not None
    receiver.proc.wait(60)
    assert receiver.proc.returncode == 2
    assert "ENTITY_SYNC_UPSTREAM_WEBHOOK_SECRET: not set" in receiver.log_path.read_text()


def test_the_worker_without_the_secret_says_why(stack: dict[str, Container]) -> None:
    worker = stack["worker"]
    worker.env.pop("ENTITY_SYNC_SECRET_KEY")  # not in the environment compose runs in
    worker.start()
    assert worker.proc is not None
    worker.proc.wait(60)
    assert worker.proc.returncode != 0
    assert "ENTITY_SYNC_SECRET_KEY: not set" in worker.log_path.read_text()
