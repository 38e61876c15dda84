"""Tracing settings, read from the environment in one place.

Every variable the tracing library understands is parsed and validated here, once, into a frozen
:class:`TracingSettings`. A bad value is a :class:`SettingsError` at start-up that names the variable,
never a surprise at the first span.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_OTLP_ENDPOINT",
    "ExporterKind",
    "OtlpEncoder",
    "SettingsError",
    "TracingSettings",
    "env_bool",
    "env_float",
    "env_int",
    "load_settings",
    "sampling_rates",
]

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
ExporterKind = Literal["otlp", "console", "file", "none"]
LogFormat = Literal["json", "console"]
OtlpEncoder = Literal["tracehook", "upstream"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_OTLP_ENCODERS = ("tracehook", "upstream")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# Jaeger's Thrift HTTP collector (port 14268, path /api/traces): Jaeger v2's built-in config still opens it,
# but OpenTelemetry removed the exporter that spoke it, and tracehook exports OTLP only.
_THRIFT_PORT = 14268


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable and the fix."""


def _package_version() -> str:
    try:
        return metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Everything the tracing library needs, resolved and validated.

    Build it with :func:`load_settings` (from the environment) or directly (in tests and embedding
    applications); use :func:`dataclasses.replace` to derive a variant.
    """

    service_name: str = "tracehook"
    service_version: str = field(default_factory=_package_version)
    environment: str = "development"
    exporter: ExporterKind = "otlp"
    exporter_path: str | None = None
    otlp_endpoint: str = DEFAULT_OTLP_ENDPOINT + "/v1/traces"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    otlp_timeout_s: float = 10.0
    # tracehook's span encoder writes the SDK encoder's bytes at a fraction of its CPU (issue 12);
    # "upstream" switches back to the SDK's.
    otlp_encoder: OtlpEncoder = "tracehook"
    sampling_rate: float = 1.0
    emergency_sampling_rate: float = 1.0
    health_sampling_rate: float = 0.01
    # Words that make a root span an emergency by its name alone (the sampler's rule 1): the domain's to
    # give, none here; the RentVine side gives "payment".
    emergency_names: tuple[str, ...] = ()
    slow_threshold_ms: float = 1000.0
    max_attribute_length: int = 4096
    max_queue_size: int = 2048
    # The SDK's 512. It was 64 while the SDK's encoder took ~38 µs a span, because encoding a batch holds
    # the GIL (a 512-span batch stalled the intake's requests, p99 80 ms → 20 ms); tracehook's encoder
    # takes ~5 µs (2.6 ms for 512), and the HTTP POST per batch then costs 7 µs a span instead of 17.
    export_batch_size: int = 512
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    metrics_enabled: bool = True
    # 9464 is the port OpenTelemetry's Prometheus exporters default to.
    worker_metrics_port: int = 9464

    def __post_init__(self) -> None:
        for name, rate in (
            ("TRACE_SAMPLING_RATE", self.sampling_rate),
            ("TRACE_EMERGENCY_SAMPLING_RATE", self.emergency_sampling_rate),
            ("health_sampling_rate", self.health_sampling_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                msg = f"{name}={rate!r} is not a ratio: use a number from 0.0 to 1.0"
                raise SettingsError(msg)
        if self.exporter == "file" and not self.exporter_path:
            msg = "TRACE_EXPORTER=file needs a path: use file:PATH, e.g. file:/tmp/spans.jsonl"
            raise SettingsError(msg)
        if self.slow_threshold_ms < 0:
            msg = f"TRACE_SLOW_THRESHOLD_MS={self.slow_threshold_ms!r} must be zero or more"
            raise SettingsError(msg)
        if not 0 <= self.worker_metrics_port <= 65535:
            port = self.worker_metrics_port
            msg = f"WORKER_METRICS_PORT={port!r} is not a port: use 1 to 65535, or 0 for none"
            raise SettingsError(msg)
        if self.otlp_encoder not in _OTLP_ENCODERS:
            msg = f"TRACEHOOK_OTLP_ENCODER={self.otlp_encoder!r} is not one of {', '.join(_OTLP_ENCODERS)}"
            raise SettingsError(msg)
        if self.log_level not in _LOG_LEVELS:
            msg = f"LOG_LEVEL={self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}"
            raise SettingsError(msg)

    def with_service(self, name: str) -> TracingSettings:
        """Return a copy with another service name (for processes sharing one environment)."""
        return replace(self, service_name=name)


# The defaults, read by load_settings where a variable is unset (a slots dataclass has no class defaults).
_DEFAULT = TracingSettings(service_version="")


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean variable; accepts 1/0, true/false, yes/no, on/off."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    msg = f"{name}={raw!r} is not a boolean: use true or false"
    raise SettingsError(msg)


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """Read a float variable, naming the variable when it does not parse."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        msg = f"{name}={raw!r} is not a number"
        raise SettingsError(msg) from None


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """Read an integer variable no smaller than ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        msg = f"{name}={raw!r} is not an integer"
        raise SettingsError(msg) from None
    if value < minimum:
        msg = f"{name}={value} must be at least {minimum}"
        raise SettingsError(msg)
    return value


def _exporter(env: Mapping[str, str]) -> tuple[ExporterKind, str | None]:
    raw = env.get("TRACE_EXPORTER", "").strip()
    if env_bool(env, "OTEL_SDK_DISABLED", default=False):
        return "none", None
    if not raw:
        return "otlp", None
    if raw.startswith("file:"):
        path = raw.removeprefix("file:").strip()
        if not path:
            msg = "TRACE_EXPORTER=file: needs a path, e.g. file:/tmp/spans.jsonl"
            raise SettingsError(msg)
        return "file", path
    if raw in ("otlp", "console", "none"):
        return raw, None  # type: ignore[return-value]  # narrowed by the membership test
    msg = f"TRACE_EXPORTER={raw!r} is not one of otlp, console, file:PATH, none"
    raise SettingsError(msg)


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"{name}={url!r} is not an http(s) URL"
        raise SettingsError(msg)
    return url


def _otlp_endpoint(env: Mapping[str, str]) -> str:
    """Resolve the OTLP/HTTP traces URL as the SDK defines it, plus the guide's JAEGER_ENDPOINT."""
    signal = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return _check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", signal)
    jaeger = env.get("JAEGER_ENDPOINT", "").strip()
    if jaeger:
        parts = urlsplit(_check_url("JAEGER_ENDPOINT", jaeger))
        if parts.port == _THRIFT_PORT or parts.path.rstrip("/") == "/api/traces":
            msg = (
                f"JAEGER_ENDPOINT={jaeger!r} points at Jaeger's Thrift collector (port 14268), which "
                "tracehook cannot send to: OpenTelemetry removed its Jaeger Thrift exporter. "
                "Jaeger takes OpenTelemetry's OTLP natively: set OTEL_EXPORTER_OTLP_ENDPOINT="
                f"{parts.scheme}://{parts.hostname}:4318 (Jaeger's OTLP/HTTP port) and unset JAEGER_ENDPOINT."
            )
            raise SettingsError(msg)
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or jaeger or DEFAULT_OTLP_ENDPOINT
    base = _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)
    if base.rstrip("/").endswith("/v1/traces"):
        return base
    return base.rstrip("/") + "/v1/traces"


def _otlp_headers(env: Mapping[str, str]) -> dict[str, str]:
    user = env.get("JAEGER_USERNAME", "").strip()
    password = env.get("JAEGER_PASSWORD", "")
    if not user:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def sampling_rates(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """TRACE_SAMPLING_RATE and TRACE_EMERGENCY_SAMPLING_RATE (1.0 each when unset).

    Raises:
        SettingsError: a rate is not a number.
    """
    env = os.environ if env is None else env
    return (
        env_float(env, "TRACE_SAMPLING_RATE", _DEFAULT.sampling_rate),
        env_float(env, "TRACE_EMERGENCY_SAMPLING_RATE", _DEFAULT.emergency_sampling_rate),
    )


def load_settings(
    env: Mapping[str, str] | None = None, *, service_name: str = "tracehook"
) -> TracingSettings:
    """Build :class:`TracingSettings` from environment variables.

    Args:
        env: the variables to read; ``os.environ`` when omitted.
        service_name: the default service name when neither SERVICE_NAME nor OTEL_SERVICE_NAME is set.

    Returns:
        The validated, frozen settings.

    Raises:
        SettingsError: a variable has a bad value; the message names it and says what to use.
    """
    env = os.environ if env is None else env
    exporter, path = _exporter(env)
    log_format = env.get("LOG_FORMAT", "json").strip().lower() or "json"
    if log_format not in ("json", "console"):
        msg = f"LOG_FORMAT={log_format!r} is not one of json, console"
        raise SettingsError(msg)
    encoder = env.get("TRACEHOOK_OTLP_ENCODER", "").strip().lower() or "tracehook"
    timeout_s = env_float(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 0.0) or env_float(
        env, "OTEL_EXPORTER_OTLP_TIMEOUT", _DEFAULT.otlp_timeout_s
    )
    rate, emergency_rate = sampling_rates(env)
    return TracingSettings(
        service_name=(env.get("SERVICE_NAME") or env.get("OTEL_SERVICE_NAME") or service_name).strip(),
        service_version=(env.get("SERVICE_VERSION") or "").strip() or _package_version(),
        environment=(env.get("ENVIRONMENT") or "").strip() or _DEFAULT.environment,
        exporter=exporter,
        exporter_path=path,
        otlp_endpoint=_otlp_endpoint(env) if exporter == "otlp" else _DEFAULT.otlp_endpoint,
        otlp_headers=_otlp_headers(env),
        otlp_timeout_s=timeout_s,
        otlp_encoder=encoder,  # type: ignore[arg-type]  # checked by TracingSettings
        sampling_rate=rate,
        emergency_sampling_rate=emergency_rate,
        slow_threshold_ms=env_float(env, "TRACE_SLOW_THRESHOLD_MS", _DEFAULT.slow_threshold_ms),
        max_attribute_length=env_int(
            env, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", _DEFAULT.max_attribute_length, minimum=32
        ),
        max_queue_size=env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT.max_queue_size, minimum=1),
        export_batch_size=env_int(
            env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT.export_batch_size, minimum=1
        ),
        log_format=log_format,  # type: ignore[arg-type]  # checked just above
        log_level=(env.get("LOG_LEVEL") or _DEFAULT.log_level).strip().upper(),
        metrics_enabled=env_bool(env, "METRICS_ENABLED", default=_DEFAULT.metrics_enabled),
        worker_metrics_port=env_int(env, "WORKER_METRICS_PORT", _DEFAULT.worker_metrics_port, minimum=0),
    )
