"""The baseline of ``benchmarks/intake_throughput.py``: a FastAPI endpoint that only enqueues.

``POST /webhooks/rentvine`` reads the body, ``json.loads`` it and publishes ``process_webhook_event`` with
a plain Celery app configured by ``workflows.queue.celery_config()`` (REDIS_URL, CELERY_DEFAULT_QUEUE from
the environment), then answers 202. No tracing, no signature check, no validation, no dedupe, no logging:
the least a Python intake on the same stack (uvicorn, FastAPI, Celery over Redis) can do per webhook.

Run it as the benchmark does, one uvicorn process with the same options as ``tracehook intake``::

    REDIS_URL=redis://127.0.0.1:6379/8 CELERY_DEFAULT_QUEUE=q .venv/bin/python -m benchmarks._bare_intake \
        --port 8001
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workflows.queue import TASK_NAME, celery_config

ROUTE: Final = "/webhooks/rentvine"

producer = Celery("bare-intake")
producer.conf.update(celery_config())

# FastAPI's native OpenTelemetry support is off too: nothing traced, nothing measured but the enqueue.
app = FastAPI(title="bare intake", telemetry={"tracing": False, "metrics": False, "logs": False})


@app.post(ROUTE, status_code=202)
async def receive(request: Request) -> JSONResponse:
    """Enqueue the body as the event, on the event loop (a blocking publish, as cheap as it gets)."""
    body = await request.body()
    payload: Any = json.loads(body)
    result = producer.send_task(TASK_NAME, kwargs={"event": payload}, retry=False)
    return JSONResponse({"status": "queued", "task_id": result.id}, status_code=202)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, for the benchmark's start-up wait."""
    return {"status": "ok"}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the app with uvicorn, one process, as ``tracehook intake`` does (no access log)."""
    import uvicorn  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="the bare enqueue-only intake (benchmark baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
