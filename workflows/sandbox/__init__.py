"""The RentVine API sandbox (``tracehook sandbox``): a local stand-in for RentVine's API, not RentVine.

Modules: ``_app`` (the FastAPI app and its server), ``_routes`` (the API), ``_models`` (request bodies),
``_db`` (SQLite through SQLAlchemy, records made up for ids it has not seen), ``_webhooks`` (its change
announcements), ``_faults`` (failures armed for tests).
"""

from __future__ import annotations

from workflows.sandbox._app import SERVICE_NAME, TITLE, create_app, serve
from workflows.sandbox._faults import FaultInjector
from workflows.sandbox._models import FaultSpec
from workflows.sandbox._webhooks import WebhookAnnouncer

__all__ = ["SERVICE_NAME", "TITLE", "FaultInjector", "FaultSpec", "WebhookAnnouncer", "create_app", "serve"]
