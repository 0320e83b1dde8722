"""compose.yaml: the Docker topology must match the local stack and the pinned versions.

Without Docker these tests read compose.yaml, connectors/pom.xml, connectors/*.json
and docker/ directly. Where Debian's `docker-compose` is installed they also run
its own validation (`docker-compose config -q`), and where its Compose
Specification schema is on disk, validate against that schema with jsonschema.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from engine.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
POM = ROOT / "connectors" / "pom.xml"
CONNECT_DIR = ROOT / "docker" / "connect"
REGISTER_SCRIPT = ROOT / "docker" / "register" / "register_connectors.py"

#: The Postgres major version the local stack runs (and the demo SQL targets).
POSTGRES_MAJOR = "15"
APP_DIR = ROOT / "docker" / "app"
REQUIRED_SERVICES = {"postgres", "kafka", "connect", "register", "engine", "dashboards"}
LONG_RUNNING = ("postgres", "kafka", "connect", "engine", "dashboards")

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
_ENV_PLACEHOLDER = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

#: Where Debian's docker-compose (1.x, Python) keeps the Compose Specification schema.
_SCHEMA_CANDIDATES = [
    Path(p) / "compose" / "config" / "compose_spec.json"
    for p in [*sys.path, "/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"]
    if p
]


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def pom_versions() -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(POM).getroot().find("m:properties", ns)
    assert props is not None, f"{POM} has no <properties>"
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in props}


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: every variable needs a default."""

    def default(match: re.Match[str]) -> str:
        if match.group(2) is None:
            raise AssertionError(f"{value!r}: ${{{match.group(1)}}} has no default")
        return match.group(2)

    return _INTERPOLATION.sub(default, value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) of each short-syntax port, defaults interpolated."""
    out = []
    for entry in service.get("ports") or []:
        assert isinstance(entry, str), f"port {entry!r}: use the 'IP:HOST:CONTAINER' string form"
        parts = interpolate(entry).split("/")[0].split(":")
        assert len(parts) == 3, f"port {entry!r} must name the host IP: 127.0.0.1:HOST:CONTAINER"
        out.append((parts[0], parts[1], parts[2]))
    return out


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def connector_placeholders() -> set[str]:
    names: set[str] = set()
    for path in sorted((ROOT / "connectors").glob("*.json")):
        names |= set(_ENV_PLACEHOLDER.findall(path.read_text()))
    return names


def dockerfile_from_images(path: Path) -> list[str]:
    return [
        line.split()[1]
        for line in path.read_text().splitlines()
        if line.strip().upper().startswith("FROM ")
    ]


def is_docker_hub(image: str) -> bool:
    """True for Docker Hub names (`postgres:15`, `apache/kafka:4.1.1`), not other registries."""
    first = image.split("/", 1)[0]
    return "/" not in image or not ("." in first or ":" in first or first == "localhost")


def load_register_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("register_connectors", REGISTER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- docker-compose's own validation --------------------------------------------------


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return binary


def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config rejected compose.yaml:\n{result.stderr}"


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    # The check above means something only if docker-compose does validate.
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  x:\n    image: postgres:15\n    not_a_compose_key: 1\n")
    result = subprocess.run(
        [_docker_compose(), "-f", str(broken), "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, "docker-compose accepted an unknown service key"


# -- the Compose Specification schema --------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    for candidate in _SCHEMA_CANDIDATES:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    pytest.skip("no compose_spec.json found (it ships with Debian's docker-compose)")


def test_compose_file_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    # The file names draft 2019-09 by an address jsonschema does not know; say it here.
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "compose.yaml breaks the Compose Specification:\n" + "\n".join(errors)

    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["not_a_compose_key"] = True
    assert list(validator.iter_errors(broken)), "the schema accepted an unknown service key"


# -- topology facts, without Docker ----------------------------------------------------


def test_services_present_and_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the top-level `version:` key is obsolete; remove it"
    missing = REQUIRED_SERVICES - set(compose["services"])
    assert not missing, f"compose.yaml lacks services {sorted(missing)}"


def test_every_published_port_is_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    seen = 0
    for name, service in services.items():
        for host_ip, published, _target in published_ports(service):
            seen += 1
            assert host_ip == "127.0.0.1", f"{name} publishes {published} on {host_ip!r}"
    assert seen >= len(LONG_RUNNING)


def test_published_ports_are_the_local_stack_defaults(services: dict[str, dict[str, Any]]) -> None:
    defaults = Settings()
    expected = {
        "postgres": ("CHANGEFOLD_PG_PORT", defaults.stack.pg_port, 5432),
        "kafka": ("CHANGEFOLD_KAFKA_PORT", defaults.stack.kafka_port, None),
        "connect": ("CHANGEFOLD_CONNECT_PORT", defaults.stack.connect_port, 8083),
        "engine": ("CHANGEFOLD_API_PORT", defaults.api.api_port, defaults.api.api_port),
        "dashboards": ("CHANGEFOLD_DASHBOARD_PORT", defaults.stack.dashboard_port, 8501),
    }
    for name, (variable, port, target) in expected.items():
        raw = services[name]["ports"]
        assert len(raw) == 1, f"{name} should publish exactly one port, has {raw}"
        assert f"${{{variable}:-{port}}}" in raw[0], f"{name}: publish ${{{variable}:-{port}}}"
        _ip, published, container = published_ports(services[name])[0]
        assert int(published) == port
        if target is not None:
            assert int(container) == target, f"{name} must publish container port {target}"


def test_kafka_listeners_serve_containers_and_the_host(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["kafka"])
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert advertised["INTERNAL"] == "kafka:9092", "containers must reach the broker as kafka:9092"
    # The host listener advertises exactly the published loopback address.
    raw_port = services["kafka"]["ports"][0]
    host_ip, published, target = published_ports(services["kafka"])[0]
    assert interpolate(advertised["HOST"]) == f"{host_ip}:{published}"
    assert raw_port.split(":")[1] in advertised["HOST"], (
        "advertise the same ${VAR:-port} you publish"
    )
    assert listeners["HOST"].rsplit(":", 1)[1] == target
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1", "change topics are the replay log: keep them"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert len(env["CLUSTER_ID"]) == 22, "CLUSTER_ID must be a base64 UUID (22 characters)"


def test_images_follow_the_versions_pinned_in_the_pom(services: dict[str, dict[str, Any]]) -> None:
    versions = pom_versions()
    assert services["kafka"]["image"] == f"apache/kafka:{versions['kafka.version']}", (
        "kafka image and <kafka.version> in connectors/pom.xml disagree; bump both"
    )
    assert services["postgres"]["image"] == f"postgres:{POSTGRES_MAJOR}"
    # The connect image is built from the pom itself, so it cannot drift.
    build = services["connect"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert "COPY connectors/pom.xml" in text
    assert "dependency:copy-dependencies" in text and "-DoutputDirectory=/jars" in text
    assert "org.apache.kafka.connect.cli.ConnectDistributed" in text
    assert "/jars/*" in text


def test_images_come_from_docker_hub_only(services: dict[str, dict[str, Any]]) -> None:
    images = [s["image"] for s in services.values() if "build" not in s]
    images += dockerfile_from_images(CONNECT_DIR / "Dockerfile")
    images += dockerfile_from_images(APP_DIR / "Dockerfile")
    assert "maven:3.9-eclipse-temurin-17" in images
    for image in images:
        assert ":" in image.rsplit("/", 1)[-1], f"{image}: pin a tag"
        assert is_docker_hub(image), f"{image}: use an official image, not another registry"


def test_connect_environment_defines_every_connector_placeholder(
    services: dict[str, dict[str, Any]],
) -> None:
    placeholders = connector_placeholders()
    assert placeholders, "connectors/*.json reference no ${env:...}: did their format change?"
    env = env_of(services["connect"])
    missing = placeholders - set(env)
    assert not missing, f"connect's environment lacks {sorted(missing)} used by connectors/*.json"
    pg = env_of(services["postgres"])
    assert env["CHANGEFOLD_PG_HOST"] == "postgres"
    assert env["CHANGEFOLD_PG_PORT"] == "5432"
    assert env["CHANGEFOLD_PG_USER"] == pg["POSTGRES_USER"]
    assert env["CHANGEFOLD_PG_PASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert env["CHANGEFOLD_PG_DATABASE"] == pg["POSTGRES_DB"]
    assert int(interpolate(env["CHANGEFOLD_TOPIC_PARTITIONS"])) == Settings().stack.topic_partitions
    assert env["CHANGEFOLD_TOPIC_REPLICATION_FACTOR"] == "1"


def test_postgres_runs_with_logical_decoding_and_loads_the_demo_schemas(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    command = postgres["command"]
    args = command if isinstance(command, list) else command.split()
    settings = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-c"}
    assert "wal_level=logical" in settings, "Debezium needs wal_level=logical"
    assert any(s.startswith("max_replication_slots=") for s in settings)
    assert any(s.startswith("max_wal_senders=") for s in settings)
    assert "./sql/source:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert list((ROOT / "sql" / "source").glob("*.sql")), "no demo schemas in sql/source"


def test_health_gates_order_the_start(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        assert "test" in services[name].get("healthcheck", {}), f"{name} needs a healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"
    assert services["connect"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["register"]["depends_on"]["connect"]["condition"] == "service_healthy"
    assert services["register"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_bind_mounts_and_build_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    dockerfile = (CONNECT_DIR / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.MULTILINE)
    sources = [src for line in copied for src in line.split()[:-1]]
    assert sources, "the connect Dockerfile copies nothing from the context"
    ignore = (CONNECT_DIR / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert (ROOT / source).is_file(), f"the connect Dockerfile copies missing {source}"
        assert any(f"!{source}".startswith(rule) for rule in ignore if rule.startswith("!")), (
            f"{source} is excluded from the build context by Dockerfile.dockerignore"
        )


def test_connect_worker_properties(services: dict[str, dict[str, Any]]) -> None:
    props = read_properties(CONNECT_DIR / "worker.properties")
    kafka_env = env_of(services["kafka"])
    assert f"INTERNAL://{props['bootstrap.servers']}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert props["group.id"] == "changefold-connect"
    for side in ("key", "value"):
        assert props[f"{side}.converter"] == "org.apache.kafka.connect.json.JsonConverter"
        assert props[f"{side}.converter.schemas.enable"] == "true"
    for topic in ("config", "offset", "status"):
        assert props[f"{topic}.storage.topic"]
        assert props[f"{topic}.storage.replication.factor"] == "1"
    assert props["listeners"] == "http://0.0.0.0:8083"
    _ip, _published, target = published_ports(services["connect"])[0]
    assert props["listeners"].endswith(f":{target}")
    assert "localhost:8083/health" in " ".join(services["connect"]["healthcheck"]["test"])
    assert props["config.providers"] == "env"
    assert (
        props["config.providers.env.class"]
        == "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    log4j2 = read_properties(CONNECT_DIR / "log4j2.properties")
    assert log4j2["appender.console.type"] == "Console"


# -- the register one-shot -------------------------------------------------------------


def test_register_service_runs_the_script_on_the_connector_files(
    services: dict[str, dict[str, Any]],
) -> None:
    register = services["register"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in register["volumes"])
    script_in_container = mounts["./docker/register/register_connectors.py"]
    assert script_in_container in register["command"]
    assert mounts["./connectors"] == env_of(register)["CONNECTORS_DIR"]
    assert env_of(register)["CONNECT_URL"] == "http://connect:8083"


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_register_script_puts_each_config_object_and_retries_a_rebalance(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import email.message
    import io
    import urllib.error

    module = load_register_module()
    calls: list[tuple[str, str, dict[str, str]]] = []

    def fake_urlopen(request: Any, timeout: float) -> _Response:
        calls.append((request.get_method(), request.full_url, json.loads(request.data)))
        if len(calls) == 1:  # a worker group rebalancing answers 409 first
            raise urllib.error.HTTPError(
                request.full_url,
                409,
                "Conflict",
                email.message.Message(),
                io.BytesIO(b'{"message":"rebalance"}'),
            )
        return _Response(201)

    monkeypatch.setattr(module.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(module.time, "sleep", lambda _s: None)
    monkeypatch.setenv("CONNECT_URL", "http://connect.test:8083/")
    monkeypatch.setenv("CONNECTORS_DIR", str(ROOT / "connectors"))

    assert module.main() == 0
    files = sorted((ROOT / "connectors").glob("*.json"))
    expected = [json.loads(p.read_text()) for p in files]
    assert len(calls) == len(expected) + 1
    first = expected[0]
    assert calls[0] == calls[1], "the 409 must be retried with the same request"
    for (method, url, body), doc in zip(calls[1:], expected, strict=True):
        assert method == "PUT"
        assert url == f"http://connect.test:8083/connectors/{doc['name']}/config"
        assert body == doc["config"], "PUT the config object, not the {name, config} file"
    assert f"{first['name']}: created" in capsys.readouterr().out


def test_register_script_fails_on_a_file_without_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_register_module()
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad"}))
    monkeypatch.setenv("CONNECTORS_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"bad\.json"):
        module.main()


# -- the engine and the dashboards ------------------------------------------------------


def test_engine_and_dashboards_share_one_app_image_built_from_the_checkout(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("engine", "dashboards"):
        build = services[name]["build"]
        assert (build["context"], build["dockerfile"]) == (".", "docker/app/Dockerfile"), name
        assert services[name]["image"] == "changefold-app:local"
    dockerfile = (APP_DIR / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (.+)$", dockerfile, flags=re.MULTILINE)
    sources = [src for line in copied for src in line.split()[:-1]]
    assert {"pyproject.toml", "engine", "sql", "connectors", "dashboards"} <= set(sources)
    ignore = (APP_DIR / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert (ROOT / source).exists(), f"the app Dockerfile copies missing {source}"
        assert f"!{source}" in ignore, f"{source} is excluded from the build context"
    assert "pip install" in dockerfile and "USER " in dockerfile, "install, then drop root"
    assert dockerfile_from_images(APP_DIR / "Dockerfile")[0].startswith("python:3.")


def test_engine_reaches_kafka_inside_and_serves_its_api_to_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    engine = services["engine"]
    env = {k: interpolate(v) for k, v in env_of(engine).items()}
    settings = Settings.from_env(env)  # every variable is one the engine reads, and valid
    kafka_env = env_of(services["kafka"])
    assert (
        f"INTERNAL://{settings.stack.bootstrap_servers}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert settings.api.api_host == "0.0.0.0", "inside its container the API must listen on all"
    _ip, _published, target = published_ports(engine)[0]
    assert int(target) == settings.api.api_port
    assert engine["command"] == ["changefold", "run"]
    assert str(settings.engine.state_path).startswith("/data/")
    assert "enginedata:/data" in engine["volumes"]
    assert engine["depends_on"]["register"]["condition"] == "service_completed_successfully"
    assert engine["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert f"127.0.0.1:{settings.api.api_port}/health" in " ".join(engine["healthcheck"]["test"])


def test_dashboards_read_the_engine_connect_and_postgres_services(
    services: dict[str, dict[str, Any]],
) -> None:
    dashboards = services["dashboards"]
    env = {k: interpolate(v) for k, v in env_of(dashboards).items()}
    sys.path.insert(0, str(ROOT / "dashboards"))
    try:
        import data  # dashboards/data.py reads its settings like the dashboards do
    finally:
        sys.path.remove(str(ROOT / "dashboards"))
    src = data.Sources.from_env(env)
    engine_port = int(env_of(services["engine"])["CHANGEFOLD_API_PORT"])
    assert src.api_url == f"http://engine:{engine_port}"
    _ip, _published, connect_target = published_ports(services["connect"])[0]
    assert src.connect_url == f"http://connect:{connect_target}"
    assert src.pg_address == "postgres:5432"
    pg = env_of(services["postgres"])
    assert env["CHANGEFOLD_PG_USER"] == interpolate(pg["POSTGRES_USER"])
    assert env["CHANGEFOLD_PG_PASSWORD"] == interpolate(pg["POSTGRES_PASSWORD"])
    assert env["CHANGEFOLD_PG_DATABASE"] == interpolate(pg["POSTGRES_DB"])
    command = dashboards["command"]
    assert command[:3] == ["streamlit", "run", "dashboards/app.py"]
    _ip, _published, target = published_ports(dashboards)[0]
    assert f"--server.port={target}" in command
    assert "--server.address=0.0.0.0" in command
    assert dashboards["depends_on"]["engine"]["condition"] == "service_healthy"
    assert f"127.0.0.1:{target}/_stcore/health" in " ".join(dashboards["healthcheck"]["test"])
