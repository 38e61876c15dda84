"""The RentVine side's settings, from the environment in one place (docs/configuration.md).

:class:`AppSettings` is what the intake, the workers, the sandbox and the command line read;
:class:`QueueSettings` is the queue's (Celery's broker, results, redelivery), which
:func:`workflows.queue.celery_config` turns into Celery's configuration. Each variable is read here, with
its default given once, in the dataclass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from tracing.settings import SettingsError, TracingSettings, env_bool, env_float, env_int, load_settings
from workflows.metrics import COMPLETION_BUCKETS_S
from workflows.signing import decode_secret

__all__ = [
    "DEFAULT_REDIS_URL",
    "AppSettings",
    "QueueSettings",
    "load_app_settings",
    "load_queue_settings",
]

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
# Every payment is critical (workflows.events.classify_priority); a root span named for one is kept at the
# emergency rate even when it carries no priority (the sampler's rule by name).
EMERGENCY_NAMES: Final = ("payment",)
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
# The longest first retry delay a workflow task may be given (TASK_RETRY_BACKOFF_S is capped at it).
_MAX_RETRY_BACKOFF_S: Final = 300.0


@dataclass(frozen=True)
class AppSettings:
    """Everything the intake, workers, sandbox and CLI read from the environment, validated."""

    tracing: TracingSettings = field(default_factory=lambda: TracingSettings(emergency_names=EMERGENCY_NAMES))
    redis_url: str = DEFAULT_REDIS_URL
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


_DEFAULT = AppSettings()


@dataclass(frozen=True)
class QueueSettings:
    """The queue between intake and workers: Celery's broker, result backend, redelivery and queue."""

    broker_url: str = DEFAULT_REDIS_URL
    # REDIS_URL when that is a Redis, else no results are kept.
    result_backend: str | None = DEFAULT_REDIS_URL
    visibility_timeout_s: int = 3600
    default_queue: str = "celery"


_DEFAULT_QUEUE = QueueSettings()


def load_queue_settings(env: Mapping[str, str] | None = None) -> QueueSettings:
    """Build :class:`QueueSettings` from REDIS_URL, CELERY_BROKER_URL (``amqp://`` works too;
    CELERY_RESULT_BACKEND,
    CELERY_VISIBILITY_TIMEOUT_S and CELERY_DEFAULT_QUEUE.

    Raises:
        SettingsError: a variable has a bad value; the message names it.
    """
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    broker = env.get("CELERY_BROKER_URL", "").strip() or redis_url
    if "://" not in broker:
        msg = f"CELERY_BROKER_URL={broker!r} is not a URL such as redis://host:6379/0 or amqp://host:5672//"
        raise SettingsError(msg)
    results = env.get("CELERY_RESULT_BACKEND", "").strip() or None
    if results is None and redis_url.startswith(_REDIS_SCHEMES):
        results = redis_url
    return QueueSettings(
        broker_url=broker,
        result_backend=results,
        visibility_timeout_s=env_int(
            env, "CELERY_VISIBILITY_TIMEOUT_S", _DEFAULT_QUEUE.visibility_timeout_s, minimum=1
        ),
        default_queue=env.get("CELERY_DEFAULT_QUEUE", "").strip() or _DEFAULT_QUEUE.default_queue,
    )


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
    value = env_float(env, "WEBHOOK_OBJECTIVE_S", _DEFAULT.webhook_objective_s)
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
    redis_url = env.get("REDIS_URL", "").strip() or _DEFAULT.redis_url
    if not redis_url.startswith(_REDIS_SCHEMES):
        msg = f"REDIS_URL={redis_url!r} is not a Redis URL (redis://host:6379/0, rediss://, unix://)"
        raise SettingsError(msg)
    return AppSettings(
        tracing=replace(load_settings(env, service_name=service_name), emergency_names=EMERGENCY_NAMES),
        redis_url=redis_url,
        webhook_secrets=secrets,
        allow_unsigned=env_bool(env, "WEBHOOK_ALLOW_UNSIGNED", default=False),
        max_bytes=env_int(env, "WEBHOOK_MAX_BYTES", _DEFAULT.max_bytes, minimum=1),
        rentvine_api_url=(env.get("RENTVINE_API_URL", "").strip() or _DEFAULT.rentvine_api_url).rstrip("/"),
        rentvine_api_key=env.get("RENTVINE_API_KEY", "").strip(),
        rentvine_timeout_s=env_float(env, "RENTVINE_TIMEOUT_S", _DEFAULT.rentvine_timeout_s),
        task_max_retries=env_int(env, "TASK_MAX_RETRIES", _DEFAULT.task_max_retries, minimum=0),
        task_retry_backoff_s=min(
            env_float(env, "TASK_RETRY_BACKOFF_S", _DEFAULT.task_retry_backoff_s), _MAX_RETRY_BACKOFF_S
        ),
        webhook_objective_s=_objective_s(env),
        sandbox_webhook_url=env.get("SANDBOX_WEBHOOK_URL", "").strip(),
        sandbox_db=env.get("SANDBOX_DB", "").strip() or _DEFAULT.sandbox_db,
        jaeger_query_url=(env.get("JAEGER_QUERY_URL", "").strip() or _DEFAULT.jaeger_query_url).rstrip("/"),
        intake_url=env.get("INTAKE_URL", "").strip() or _DEFAULT.intake_url,
    )
