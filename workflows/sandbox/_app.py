"""The RentVine API sandbox: a local stand-in for RentVine's API, not RentVine itself (``tracehook sandbox``).

It answers the calls the workflows make (properties, work orders, leases, payments, the ledger,
notifications) from a SQLite file, making up believable records for ids it has not seen. It is traced like
any service (``rentvine-sandbox``): its server spans are children of the caller's client span, with one
span per SQL query under them. Like RentVine, it announces changes made through its API as signed webhooks
(``SANDBOX_WEBHOOK_URL``), and for tests it can be told to fail (``POST /_sandbox/faults``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import sqlalchemy
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import TracerProvider
from sqlalchemy import event
from sqlalchemy.pool import StaticPool
from starlette.exceptions import HTTPException

from tracing import configure_logging, configure_tracing, flush_tracing, get_logger
from workflows._fastapi import telemetry_off
from workflows.sandbox._db import SandboxStore
from workflows.sandbox._faults import FaultInjector, FaultMiddleware
from workflows.sandbox._routes import http_error, router, server_error, validation_error
from workflows.sandbox._webhooks import WebhookAnnouncer
from workflows.settings import AppSettings, load_app_settings

__all__ = ["SERVICE_NAME", "TITLE", "create_app", "serve"]

SERVICE_NAME: Final = "rentvine-sandbox"
TITLE: Final = "RentVine API sandbox (local stand-in)"
_log = get_logger("workflows.sandbox")


def _engine(path: str) -> sqlalchemy.Engine:
    if path == ":memory:":
        return sqlalchemy.create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(
        f"sqlite:///{Path(path).expanduser()}", connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _foreign_keys(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    return engine


def create_app(
    settings: AppSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the sandbox app on ``settings.sandbox_db``, instrumented (FastAPI and SQLAlchemy).

    Tracing itself is the process's to configure (:func:`serve` does); until then spans go nowhere.

    Args:
        settings: the sandbox's settings; read from the environment when omitted.
        tracer_provider: the provider for the instrumentations; the global one when omitted.
    """
    settings = settings if settings is not None else load_app_settings(service_name=SERVICE_NAME)
    engine = _engine(settings.sandbox_db)
    store = SandboxStore(engine)
    with suppress_instrumentation():
        store.create_schema()
    instrumentor = SQLAlchemyInstrumentor()
    # Once on in a process, create_engine is wrapped and engines made after that are traced already.
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(engine=engine, enable_commenter=False, tracer_provider=tracer_provider)
    secret = settings.webhook_secrets[0] if settings.webhook_secrets else None
    webhooks = (
        WebhookAnnouncer(settings.sandbox_webhook_url, secret) if settings.sandbox_webhook_url else None
    )
    if webhooks is not None and secret is None:
        _log.warning("sandbox.webhook.unsigned", detail="WEBHOOK_SECRET is not set: webhooks go out unsigned")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if webhooks is not None:
            await asyncio.to_thread(webhooks.close)
        engine.dispose()
        # uvicorn re-raises SIGTERM with the default handler once it has shut down, so atexit hooks (the
        # tracing library's final flush among them) never run: export the last spans here.
        await asyncio.to_thread(flush_tracing)

    try:
        version = metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    app = FastAPI(
        title=TITLE,
        version=version,
        description=__doc__,
        lifespan=lifespan,
        # A bearer key is accepted (and shown in the OpenAPI document), never checked, logged or traced.
        dependencies=[Depends(HTTPBearer(auto_error=False))],
        **telemetry_off(),
    )
    app.state.store, app.state.faults, app.state.webhooks = store, FaultInjector(), webhooks
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
    app.add_middleware(FaultMiddleware, faults=app.state.faults)
    # One SERVER span per request: the ASGI receive/send sub-spans say nothing a reader needs.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz", tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
    )
    return app


def serve(host: str = "127.0.0.1", port: int = 8081, settings: AppSettings | None = None) -> None:
    """Run the sandbox with uvicorn until stopped, tracing and logging as ``rentvine-sandbox``.

    Args:
        host: interface to listen on.
        port: port to listen on (8081 is where the workers look by default).
        settings: read from the environment when omitted (service name ``rentvine-sandbox``).
    """
    settings = settings if settings is not None else load_app_settings(service_name=SERVICE_NAME)
    configure_tracing(settings.tracing)
    configure_logging(settings.tracing)
    _log.info("sandbox.starting", host=host, port=port, webhooks=bool(settings.sandbox_webhook_url))
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)
