"""Settings from the environment: defaults, validation, the guide's JAEGER_* variables."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from tracing import OperationBasedSampler, SettingsError, TracingSettings, load_settings
from workflows.settings import AppSettings, QueueSettings, load_app_settings, load_queue_settings


class TestDefaults:
    """With an empty environment the documented defaults apply."""

    def test_defaults(self) -> None:
        """The configuration table: otlp to localhost:4318, sample everything, slow at 1000 ms, JSON at INFO."""
        settings = load_settings({}, service_name="tracehook-worker")
        assert settings.service_name == "tracehook-worker"
        assert settings.environment == "development"
        assert settings.exporter == "otlp"
        assert settings.otlp_endpoint == "http://localhost:4318/v1/traces"
        assert settings.sampling_rate == 1.0
        assert settings.emergency_sampling_rate == 1.0
        assert settings.slow_threshold_ms == 1000.0
        assert (settings.log_format, settings.log_level) == ("json", "INFO")

    def test_loaders_give_the_dataclass_defaults(self) -> None:
        """Each default is written once, in its dataclass: an empty environment loads exactly those."""
        assert TracingSettings() == load_settings({})
        assert AppSettings() == load_app_settings({})
        assert QueueSettings() == load_queue_settings({})

    def test_guide_sampler_reads_the_rates(self) -> None:
        """OperationBasedSampler takes TRACE_SAMPLING_RATE / TRACE_EMERGENCY_SAMPLING_RATE as the tracing
        settings read them."""
        env = {"TRACE_SAMPLING_RATE": "0.25", "TRACE_EMERGENCY_SAMPLING_RATE": "0.5"}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            sampler = OperationBasedSampler()
        assert (0.25, 0.5) == (sampler.rate, sampler.emergency_rate)
        assert (0.25, 0.5) == (load_settings(env).sampling_rate, load_settings(env).emergency_sampling_rate)

    def test_settings_are_frozen(self) -> None:
        """Settings cannot be changed once built."""
        settings = load_settings({})
        with pytest.raises(AttributeError):
            settings.sampling_rate = 0.5  # type: ignore[misc]

    def test_service_name_from_env(self) -> None:
        """SERVICE_NAME wins over OTEL_SERVICE_NAME, which wins over the default."""
        assert load_settings({"OTEL_SERVICE_NAME": "b"}).service_name == "b"
        assert load_settings({"SERVICE_NAME": "a", "OTEL_SERVICE_NAME": "b"}).service_name == "a"


class TestValidation:
    """A bad value is an error at start-up that names the variable."""

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"TRACE_SAMPLING_RATE": "1.7"}, "TRACE_SAMPLING_RATE"),
            ({"TRACE_SAMPLING_RATE": "lots"}, "TRACE_SAMPLING_RATE"),
            ({"TRACE_EMERGENCY_SAMPLING_RATE": "-0.1"}, "TRACE_EMERGENCY_SAMPLING_RATE"),
            ({"TRACE_EXPORTER": "jaeger"}, "TRACE_EXPORTER"),
            ({"TRACE_EXPORTER": "file:"}, "TRACE_EXPORTER"),
            ({"TRACE_SLOW_THRESHOLD_MS": "-5"}, "TRACE_SLOW_THRESHOLD_MS"),
            ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
            ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
            ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
        ],
    )
    def test_bad_value_names_the_variable(self, env: dict[str, str], variable: str) -> None:
        """The error message starts from the variable's name."""
        with pytest.raises(SettingsError, match=variable):
            load_settings(env)

    def test_direct_construction_is_validated(self) -> None:
        """Building the dataclass directly is checked the same way."""
        with pytest.raises(SettingsError, match="TRACE_SAMPLING_RATE"):
            TracingSettings(sampling_rate=1.7)

    def test_process_fails_to_start_with_bad_setting(self) -> None:
        """A process configuring tracing from a bad environment exits non-zero, naming the variable."""
        env = {**os.environ, "TRACE_SAMPLING_RATE": "1.7"}
        result = subprocess.run(
            [sys.executable, "-c", "import tracing; tracing.configure_tracing()"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "TRACE_SAMPLING_RATE" in result.stderr


class TestExporterChoice:
    """TRACE_EXPORTER picks otlp, console, file:PATH or none; OTEL_SDK_DISABLED turns export off."""

    @pytest.mark.parametrize(
        ("value", "kind", "path"),
        [
            ("otlp", "otlp", None),
            ("console", "console", None),
            ("none", "none", None),
            ("file:/tmp/spans.jsonl", "file", "/tmp/spans.jsonl"),
        ],
    )
    def test_exporter_values(self, value: str, kind: str, path: str | None) -> None:
        """Each documented value is understood."""
        settings = load_settings({"TRACE_EXPORTER": value})
        assert (kind, path) == (settings.exporter, settings.exporter_path)

    def test_sdk_disabled(self) -> None:
        """OTEL_SDK_DISABLED=true means no export, as the SDK defines it."""
        assert load_settings({"OTEL_SDK_DISABLED": "true"}).exporter == "none"


class TestEndpoints:
    """OTLP endpoints as the SDK defines them, plus the guide's JAEGER_ENDPOINT."""

    def test_base_endpoint_gets_signal_path(self) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; /v1/traces is appended."""
        settings = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"})
        assert settings.otlp_endpoint == "http://jaeger:4318/v1/traces"

    def test_signal_endpoint_used_as_is(self) -> None:
        """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL."""
        settings = load_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom"})
        assert settings.otlp_endpoint == "http://c:9999/custom"

    def test_jaeger_otlp_endpoint_is_used(self) -> None:
        """A JAEGER_ENDPOINT that is an OTLP URL is where spans go."""
        settings = load_settings({"JAEGER_ENDPOINT": "http://jaeger:4318"})
        assert settings.otlp_endpoint == "http://jaeger:4318/v1/traces"

    @pytest.mark.parametrize(
        "url", ["http://localhost:14268/api/traces", "http://jaeger:14268", "http://jaeger:80/api/traces"]
    )
    def test_retired_thrift_endpoint_fails_with_the_fix(self, url: str) -> None:
        """The retired Thrift collector stops start-up with a message saying to use OTLP on 4318."""
        with pytest.raises(SettingsError) as caught:
            load_settings({"JAEGER_ENDPOINT": url})
        message = str(caught.value)
        assert "JAEGER_ENDPOINT" in message
        assert "4318" in message
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in message

    def test_jaeger_credentials_become_basic_auth(self) -> None:
        """JAEGER_USERNAME/JAEGER_PASSWORD become a basic-auth header on the OTLP export."""
        settings = load_settings({"JAEGER_USERNAME": "ops", "JAEGER_PASSWORD": "s3cret"})
        expected = "Basic " + base64.b64encode(b"ops:s3cret").decode()
        assert {"Authorization": expected} == dict(settings.otlp_headers)
