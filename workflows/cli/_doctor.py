"""``tracehook doctor``: the guide's "Troubleshooting" made executable.

Checks the settings (a sampling rate of 0, a retired JAEGER_ENDPOINT, no webhook secret, no exporter), that
Redis (or the SQLite store) and the broker answer, that the OTLP endpoint accepts spans and Jaeger's query API
answers, and that a span sent now can be read back from Jaeger. Each finding says what is wrong and how to
fix it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx
import redis
from kombu.connection import Connection
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracing.settings import SettingsError, TracingSettings
from workflows.cli import _jaeger
from workflows.queue import celery_config
from workflows.settings import AppSettings, load_app_settings
from workflows.store import open_store

__all__ = ["PROBE_SERVICE", "WAIT_S", "Finding", "run_checks"]

Verdict = Literal["ok", "warn", "fail", "skip"]
_PROTOBUF: Final = {"Content-Type": "application/x-protobuf"}
# The probe's service.name; the tail Jaeger keeps every trace of it (deploy/jaeger/config-tail.yaml).
PROBE_SERVICE: Final = "tracehook-doctor"
# How long the read-back waits: the tail Jaeger (compose profile `tail`) writes a trace only after its
# decision_wait (10 s), then its batch; the plain one at once, and the check ends as soon as it reads it.
WAIT_S: Final = 20.0


@dataclass(frozen=True)
class Finding:
    """One check's result: ``verdict``, what was found, and what to do when it is not ``ok``."""

    check: str
    verdict: Verdict
    detail: str
    fix: str = ""


def _settings_findings(env: Mapping[str, str]) -> tuple[AppSettings | None, list[Finding]]:
    try:
        settings = load_app_settings(env, service_name=PROBE_SERVICE)
    except SettingsError as exc:
        return None, [
            Finding("settings", "fail", str(exc), "fix the variable named above, then run doctor again")
        ]
    return settings, [
        Finding("settings", "ok", "every variable parses"),
        _sampling_finding(settings.tracing),
        _exporter_finding(settings.tracing),
        _secret_finding(settings),
    ]


def _sampling_finding(tracing: TracingSettings) -> Finding:
    if tracing.sampling_rate == 0:
        return Finding(
            "sampling",
            "fail",
            "TRACE_SAMPLING_RATE=0: ordinary webhooks are never traced (only emergency ones)",
            "set TRACE_SAMPLING_RATE between 0.1 and 1.0; for errors and slow traces use the compose "
            "profile `tail`",
        )
    if tracing.emergency_sampling_rate == 0:
        return Finding(
            "sampling",
            "fail",
            "TRACE_EMERGENCY_SAMPLING_RATE=0: emergency work orders and payments are never traced",
            "set TRACE_EMERGENCY_SAMPLING_RATE=1.0",
        )
    return Finding(
        "sampling",
        "ok",
        f"ordinary {tracing.sampling_rate:g}, emergency {tracing.emergency_sampling_rate:g}",
    )


def _exporter_finding(tracing: TracingSettings) -> Finding:
    if tracing.exporter == "none":
        return Finding("exporter", "fail", "TRACE_EXPORTER=none: spans are made but never exported", _OTLP)
    if tracing.exporter == "console":
        return Finding("exporter", "warn", "TRACE_EXPORTER=console: spans go to stderr, not to Jaeger", _OTLP)
    if tracing.exporter == "file":
        return Finding("exporter", "ok", f"OTLP-JSON lines to {tracing.exporter_path} (not Jaeger)")
    return Finding("exporter", "ok", f"OTLP/HTTP to {tracing.otlp_endpoint}")


def _secret_finding(settings: AppSettings) -> Finding:
    if not settings.webhook_secrets and not settings.allow_unsigned:
        return Finding(
            "webhook secret",
            "fail",
            "WEBHOOK_SECRET is not set: the intake refuses to start",
            "set WEBHOOK_SECRET (the secret RentVine signs with) where the intake and the sandbox start: "
            "`export WEBHOOK_SECRET=whsec_...` (or `$(tracehook secret)` for a new one) in their shell, "
            "or WEBHOOK_SECRET_FILE=FILE after `tracehook secret --file FILE`; docker compose reads it "
            "from .env (see .env.example)",
        )
    if settings.allow_unsigned and not settings.webhook_secrets:
        return Finding(
            "webhook secret",
            "warn",
            "WEBHOOK_ALLOW_UNSIGNED=true: anyone who can reach the intake can enqueue work",
            "set WEBHOOK_SECRET and drop WEBHOOK_ALLOW_UNSIGNED outside local testing",
        )
    return Finding("webhook secret", "ok", f"{len(settings.webhook_secrets)} secret(s)")


_OTLP: Final = "set TRACE_EXPORTER=otlp and OTEL_EXPORTER_OTLP_ENDPOINT to Jaeger's OTLP/HTTP port (4318)"


def _store_finding(settings: AppSettings, timeout_s: float) -> Finding:
    try:
        store = open_store(settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        store.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return Finding(
            "redis",
            "fail",
            f"no answer from {settings.redis_url} ({type(exc).__name__}: {exc})",
            "start Redis (`docker compose up redis`, or `redis-server`), or point REDIS_URL at yours",
        )
    return Finding("redis", "ok", f"{settings.redis_url} answers")


def _broker_finding(env: Mapping[str, str], redis_url: str, timeout_s: float) -> Finding | None:
    try:
        config = celery_config(env)
    except SettingsError as exc:
        return Finding("broker", "fail", str(exc), "fix CELERY_BROKER_URL, or unset it to use Redis")
    url = str(config["broker_url"])
    if url == redis_url:
        return None  # the Redis check covered it
    try:
        with Connection(  # type: ignore[no-untyped-call]
            url, connect_timeout=timeout_s, transport_options=config["broker_transport_options"]
        ) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as exc:  # kombu raises many kinds; every one is "unreachable"
        return Finding(
            "broker",
            "fail",
            f"no answer from CELERY_BROKER_URL {url} ({type(exc).__name__})",
            "start the broker, or unset CELERY_BROKER_URL to use Redis",
        )
    return Finding("broker", "ok", f"{url} answers")


def _probe_request(trace_id: str | None = None) -> bytes:
    """An ``ExportTraceServiceRequest``: empty, or one span of service ``tracehook-doctor`` in a new trace."""
    if trace_id is None:
        return bytes(ExportTraceServiceRequest().SerializeToString())
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": PROBE_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tracehook.doctor").start_as_current_span("doctor.probe") as span:
        span.set_attribute("doctor.probe_id", uuid.uuid4().hex)
    provider.shutdown()
    return bytes(encode_spans(memory.get_finished_spans()).SerializeToString())


def _otlp_finding(settings: AppSettings, timeout_s: float) -> Finding:
    endpoint = settings.tracing.otlp_endpoint
    headers = {**dict(settings.tracing.otlp_headers), **_PROTOBUF}
    try:
        answer = httpx.post(endpoint, content=_probe_request(), headers=headers, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Finding(
            "otlp endpoint",
            "fail",
            f"cannot reach {endpoint} ({type(exc).__name__})",
            "start Jaeger (`docker compose up jaeger`) or point OTEL_EXPORTER_OTLP_ENDPOINT at its "
            "OTLP/HTTP port 4318: tracehook exports OTLP only, not Jaeger Thrift (port 14268, which "
            "Jaeger v2's built-in config opens but deploy/jaeger/config.yaml does not)",
        )
    if answer.status_code in {401, 403}:
        return Finding(
            "otlp endpoint",
            "fail",
            f"{endpoint} refused the credentials (HTTP {answer.status_code})",
            "set JAEGER_USERNAME/JAEGER_PASSWORD or OTEL_EXPORTER_OTLP_HEADERS",
        )
    if not answer.is_success:
        return Finding(
            "otlp endpoint",
            "fail",
            f"{endpoint} answered HTTP {answer.status_code}",
            "the URL must be an OTLP/HTTP receiver: http://HOST:4318 (the SDK adds /v1/traces)",
        )
    return Finding("otlp endpoint", "ok", f"{endpoint} accepts spans")


def _jaeger_finding(settings: AppSettings, timeout_s: float) -> Finding:
    url = f"{settings.jaeger_query_url}/api/v3/services"
    try:
        answer = httpx.get(url, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Finding(
            "jaeger query",
            "fail",
            f"cannot reach {url} ({type(exc).__name__})",
            "start Jaeger, or point JAEGER_QUERY_URL at its UI/query port (16686)",
        )
    if not answer.is_success:
        return Finding(
            "jaeger query",
            "fail",
            f"{url} answered HTTP {answer.status_code}",
            "JAEGER_QUERY_URL must be Jaeger v2's query address (the UI's, port 16686)",
        )
    return Finding("jaeger query", "ok", f"{settings.jaeger_query_url} answers")


def _round_trip_finding(settings: AppSettings, timeout_s: float, wait_s: float) -> Finding:
    body = _probe_request(trace_id="new")
    sent = ExportTraceServiceRequest.FromString(body)
    trace_id = sent.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    headers = {**dict(settings.tracing.otlp_headers), **_PROTOBUF}
    try:
        httpx.post(settings.tracing.otlp_endpoint, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Finding("round trip", "fail", f"sending the probe span failed ({type(exc).__name__})", "")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            _jaeger.fetch_trace(settings.jaeger_query_url, trace_id, timeout=timeout_s)
        except _jaeger.TraceNotFoundError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
            continue
        except _jaeger.JaegerError as exc:
            return Finding("round trip", "fail", f"reading the probe back failed: {exc}", "")
        return Finding("round trip", "ok", f"probe span (trace {trace_id}) readable from Jaeger")
    return Finding(
        "round trip",
        "fail",
        f"the probe span (trace {trace_id}) was accepted but is not readable after {wait_s:g} s",
        "OTEL_EXPORTER_OTLP_ENDPOINT and JAEGER_QUERY_URL point at different Jaegers, or its storage drops "
        "spans (check Jaeger's log)",
    )


def run_checks(
    env: Mapping[str, str], *, timeout_s: float = 3.0, wait_s: float = WAIT_S
) -> Iterator[Finding]:
    """Run every check in order, yielding each finding as soon as it is known."""
    settings, found = _settings_findings(env)
    yield from found
    if settings is None:
        return
    checks: list[Callable[[], Finding | None]] = [
        lambda: _store_finding(settings, timeout_s),
        lambda: _broker_finding(env, settings.redis_url, timeout_s),
    ]
    for check in checks:
        finding = check()
        if finding is not None:
            yield finding
    if settings.tracing.exporter != "otlp":
        yield Finding(
            "otlp endpoint", "skip", f"TRACE_EXPORTER={settings.tracing.exporter}: not exporting to OTLP"
        )
        return
    otlp = _otlp_finding(settings, timeout_s)
    jaeger = _jaeger_finding(settings, timeout_s)
    yield otlp
    yield jaeger
    if otlp.verdict == "ok" and jaeger.verdict == "ok":
        yield _round_trip_finding(settings, timeout_s, wait_s)
    else:
        yield Finding("round trip", "skip", "needs both the OTLP endpoint and Jaeger's query API")
