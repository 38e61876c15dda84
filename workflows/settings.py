"""The RentVine side's settings, from the environment in one place (DESIGN.md "Configuration")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tracing.settings import SettingsError, TracingSettings, env_bool, env_float, env_int, load_settings
from workflows.metrics import COMPLETION_BUCKETS_S
from workflows.signing import decode_secret

__all__ = ["AppSettings", "load_app_settings"]


@dataclass(frozen=True)
class AppSettings:
    """Everything the intake, workers, sandbox and CLI read from the environment, validated."""

    tracing: TracingSettings = field(default_factory=TracingSettings)
    redis_url: str = "redis://localhost:6379/0"
    webhook_secrets: tuple[str, ...] = ()
    allow_unsigned: bool = False
    max_bytes: int = 1_048_576
    rentvine_api_url: str = "http://localhost:8081"
    rentvine_api_key: str = field(default="", repr=False)
    rentvine_timeout_s: float = 5.0
    task_max_retries: int = 5
    task_retry_backoff_s: float = 2.0
    webhook_objective_s: float = 30.0
    sandbox_webhook_url: str = ""
    sandbox_db: str = "rentvine-sandbox.sqlite3"
    jaeger_query_url: str = "http://localhost:16686"
    intake_url: str = "http://localhost:8000/webhooks/rentvine"

    def require_webhook_security(self) -> None:
        """Refuse to run an intake that would accept anyone's webhooks.

        Raises:
            SettingsError: no WEBHOOK_SECRET and WEBHOOK_ALLOW_UNSIGNED is not true.
        """
        if not self.webhook_secrets and not self.allow_unsigned:
            msg = (
                "WEBHOOK_SECRET is not set: the intake will not accept unsigned webhooks. Set WEBHOOK_SECRET "
                "(whsec_<base64> as `tracehook secret` makes; several, space-separated, for rotation), or "
                "WEBHOOK_ALLOW_UNSIGNED=true for local experiments only."
            )
            raise SettingsError(msg)


def _secrets_from_file(env: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets in WEBHOOK_SECRET_FILE (Docker's ``_FILE`` convention), when WEBHOOK_SECRET is empty."""
    path = env.get("WEBHOOK_SECRET_FILE", "").strip()
    if not path:
        return ()
    try:
        return tuple(Path(path).read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"WEBHOOK_SECRET_FILE={path!r} cannot be read ({exc}); "
        msg += f"`tracehook secret --file {path}` makes it"
        raise SettingsError(msg) from None


def _objective_s(env: Mapping[str, str]) -> float:
    """WEBHOOK_OBJECTIVE_S, which must be a bucket bound of the completion histogram (its alerts use it)."""
    value = env_float(env, "WEBHOOK_OBJECTIVE_S", AppSettings.webhook_objective_s)
    if value not in COMPLETION_BUCKETS_S:
        bounds = ", ".join(f"{bound:g}" for bound in COMPLETION_BUCKETS_S)
        msg = (
            f"WEBHOOK_OBJECTIVE_S={env['WEBHOOK_OBJECTIVE_S'].strip()!r} is not a bucket bound of "
            f"tracehook_webhook_completion_seconds, so no alert could count the webhooks within it: use one "
            f"of {bounds} (and the same le in monitoring/alerts.yml)"
        )
        raise SettingsError(msg)
    return value


def load_app_settings(
    env: Mapping[str, str] | None = None, *, service_name: str = "tracehook"
) -> AppSettings:
    """Build :class:`AppSettings` from the environment.

    Raises:
        SettingsError: a variable has a bad value; the message names it.
    """
    env = os.environ if env is None else env
    secrets = tuple(env.get("WEBHOOK_SECRET", "").split()) or _secrets_from_file(env)
    for secret in secrets:
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    redis_url = env.get("REDIS_URL", "").strip() or AppSettings.redis_url
    if not redis_url.startswith(("redis://", "rediss://", "unix://", "sqlite:///")):
        msg = (
            f"REDIS_URL={redis_url!r} is not a Redis URL (redis://host:6379/0, rediss://, unix://) nor a "
            "SQLite file for a Redis-less set-up (sqlite:////abs/path/state.sqlite3)"
        )
        raise SettingsError(msg)
    return AppSettings(
        tracing=load_settings(env, service_name=service_name),
        redis_url=redis_url,
        webhook_secrets=secrets,
        allow_unsigned=env_bool(env, "WEBHOOK_ALLOW_UNSIGNED", default=False),
        max_bytes=env_int(env, "WEBHOOK_MAX_BYTES", 1_048_576, minimum=1),
        rentvine_api_url=(env.get("RENTVINE_API_URL", "").strip() or "http://localhost:8081").rstrip("/"),
        rentvine_api_key=env.get("RENTVINE_API_KEY", "").strip(),
        rentvine_timeout_s=env_float(env, "RENTVINE_TIMEOUT_S", 5.0),
        task_max_retries=env_int(env, "TASK_MAX_RETRIES", 5, minimum=0),
        task_retry_backoff_s=min(env_float(env, "TASK_RETRY_BACKOFF_S", 2.0), 300.0),
        webhook_objective_s=_objective_s(env),
        sandbox_webhook_url=env.get("SANDBOX_WEBHOOK_URL", "").strip(),
        sandbox_db=env.get("SANDBOX_DB", "").strip() or "rentvine-sandbox.sqlite3",
        jaeger_query_url=(env.get("JAEGER_QUERY_URL", "").strip() or "http://localhost:16686").rstrip("/"),
        intake_url=env.get("INTAKE_URL", "").strip() or "http://localhost:8000/webhooks/rentvine",
    )
