"""instrument_celery in users' own apps, wired the way users wire things, with real prefork workers.

Each user app lives in ``tests/integration/user_apps``: docs/celery.md's one call with configuration after it,
a user who brought their own SDK set-up and logging (three ways), a web process that only publishes, a
worker started by ``opentelemetry-instrument``, and a leftover stock ``CeleryInstrumentor().instrument()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.integration.conftest import REDIS_URL, ROOT, Worker, start_worker, wait_ready
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tracing import instrument_celery, trace_span

pytestmark = pytest.mark.integration
TIMEOUT = 30.0
STOCK_SWITCHED_OFF = "switched off opentelemetry-instrumentation-celery"
STOCK_REFUSED = "CeleryInstrumentor().instrument() ignored"


@pytest.fixture(scope="module")
def client() -> Iterator[Celery]:
    """An uninstrumented client app of the test's own: it publishes by task name and reads results."""
    app = Celery("dropin-client", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    yield app
    app.close()


def with_task_id(receiver: OtlpReceiver, task_id: str) -> list[ReceivedSpan]:
    """The task's spans, ours (celery.task_id) and the stock instrumentation's (messaging.message.id)."""
    return [
        span
        for span in receiver.spans
        if task_id in (span.attributes.get("celery.task_id"), span.attributes.get("messaging.message.id"))
    ]


def wait_task_spans(receiver: OtlpReceiver, task_id: str, names: set[str]) -> list[ReceivedSpan]:
    """Wait until spans with each of these names exist for the task; return all of the task's spans."""
    receiver.wait_for(
        lambda _: names <= {span.name for span in with_task_id(receiver, task_id)},
        timeout=TIMEOUT,
        description=f"spans {sorted(names)} of task {task_id}",
    )
    return with_task_id(receiver, task_id)


def started(
    receiver: OtlpReceiver, tmp_path: Path, app: str, ready_task: str, **kwargs: Any
) -> Iterator[Worker]:
    worker = start_worker(receiver, tmp_path, app=app, **kwargs)
    try:
        probe = Celery("dropin-probe", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
        wait_ready(worker, probe, task=ready_task)
        probe.close()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def plain_worker(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A prefork worker of docs/celery.md's user app: tracehook's provider from the environment."""
    yield from started(
        receiver,
        tmp_path_factory.mktemp("plain"),
        "tests.integration.user_apps.plain_app",
        "user_plain.noop",
    )


class TestUsersOwnSetUp:
    """A user's provider, exporter and logging stay theirs, and their spans survive a child's exit."""

    @pytest.mark.parametrize("mode", ["argument", "global", "process-init"])
    def test_provider_and_logging_stay_theirs(
        self, receiver: OtlpReceiver, client: Celery, tmp_path: Path, mode: str
    ) -> None:
        """With --max-tasks-per-child=1 every run span reaches the user's exporter; tracehook sets up no
        provider and no logging of its own in the worker."""
        log_file = tmp_path / "user.log"
        for worker in started(
            receiver,
            tmp_path,
            "tests.integration.user_apps.own_provider_app",
            "user_own.noop",
            extra_args=("--max-tasks-per-child=1",),
            USER_PROVIDER_MODE=mode,
            USER_OTLP_ENDPOINT=receiver.traces_url,
            USER_LOG_FILE=str(log_file),
        ):
            wiring = client.send_task("user_own.wiring", queue=worker.queue).get(timeout=TIMEOUT)
            ids = [client.send_task("user_own.add", (i, 1), queue=worker.queue).id for i in range(3)]
            for task_id in ids:
                (run,) = wait_task_spans(receiver, task_id, {"run user_own.add"})
                assert "user-own" == run.service_name
            assert ["FileHandler"] == wiring["root_handlers"]
            assert wiring["tracehook_provider"] is False
            assert (mode != "argument") == wiring["global_is_users"]
            assert "USER INFO user_own.tasks adding 0 and 1" in log_file.read_text()
            assert not [s for s in receiver.spans if s.service_name == "test-worker"]


def run_producer(receiver: OtlpReceiver, worker: Worker, mode: str) -> list[str]:
    """Run the web process that only publishes; return the task ids it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "USER_QUEUE": worker.queue,
        "SERVICE_NAME": "user-web",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "USER_OTLP_ENDPOINT": receiver.traces_url,
        "TRACE_EXPORTER": "otlp",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.user_apps.web_producer", mode],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


class TestProducerOnly:
    """instrument_celery(app) alone traces a process that only publishes; a provider of the user's wins."""

    @pytest.mark.parametrize(
        ("mode", "services"),
        [
            ("alone", ["user-web"]),
            ("user-first", ["user-web-own"]),
            ("user-between", ["user-web", "user-web-own"]),
        ],
    )
    def test_publish_span_parents_the_run(
        self, receiver: OtlpReceiver, plain_worker: Worker, mode: str, services: list[str]
    ) -> None:
        """Each .delay() is a publish span in the producer's trace, and the worker's run span its child."""
        ids = run_producer(receiver, plain_worker, mode)
        assert len(services) == len(ids)
        for task_id, service in zip(ids, services, strict=True):
            spans = wait_task_spans(receiver, task_id, {"publish user_plain.add", "run user_plain.add"})
            (publish,) = [s for s in spans if s.name == "publish user_plain.add"]
            (run,) = [s for s in spans if s.name == "run user_plain.add"]
            assert service == publish.service_name
            assert "test-worker" == run.service_name
            assert (publish.trace_id, publish.span_id) == (run.trace_id, run.parent_span_id)


class TestProtocolOne:
    """Messages of task protocol 1 (old producers) keep their ids on the publish span."""

    def test_ids_and_parentage(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, plain_worker: Worker
    ) -> None:
        """messaging.message.id and celery.task_id are the task's id; the run span is the publish's child."""
        app = Celery("old-producer", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
        app.conf.task_protocol = 1
        instrument_celery(app, configure_worker=False, metrics=False)
        try:
            with trace_span("caller"):
                result = app.send_task("user_plain.add", (2, 3), queue=plain_worker.queue)
            assert 5 == result.get(timeout=TIMEOUT)
        finally:
            app.close()
        spans = wait_task_spans(receiver, result.id, {"publish user_plain.add", "run user_plain.add"})
        (publish,) = [s for s in spans if s.name == "publish user_plain.add"]
        (run,) = [s for s in spans if s.name == "run user_plain.add"]
        assert result.id == publish.attributes["messaging.message.id"]
        assert (publish.trace_id, publish.span_id) == (run.trace_id, run.parent_span_id)


class TestDocumentedAttributes:
    """The run span carries what docs/celery.md promises: the ETA, the duration, the worker as client id."""

    def test_eta_duration_client_id(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, plain_worker: Worker
    ) -> None:
        """A countdown task's publish and run spans both carry celery.eta; the run span its duration and
        the worker's node name, the publish span the publisher's."""
        from tests.integration.user_apps.plain_app import add  # noqa: PLC0415

        with trace_span("caller"):
            result = add.apply_async((2, 3), queue=plain_worker.queue, countdown=0.2)
        assert 5 == result.get(timeout=TIMEOUT)
        spans = wait_task_spans(receiver, result.id, {"publish user_plain.add", "run user_plain.add"})
        (publish,) = [s for s in spans if s.name == "publish user_plain.add"]
        (run,) = [s for s in spans if s.name == "run user_plain.add"]
        assert datetime.fromisoformat(str(run.attributes["celery.eta"])) == datetime.fromisoformat(
            str(publish.attributes["celery.eta"])
        )
        assert 0 <= float(run.attributes["celery.duration_ms"]) <= run.duration_ms
        assert str(run.attributes["messaging.client.id"]).startswith(f"{plain_worker.queue}@")
        assert str(publish.attributes["messaging.client.id"]).startswith("gen")
        assert ("publish", "run") == (
            publish.attributes["messaging.operation.name"],
            run.attributes["messaging.operation.name"],
        )


class TestStockInstrumentationKeptOff:
    """One publish and one run span per task, whatever switched the stock instrumentation on."""

    def test_opentelemetry_instrument(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, tmp_path: Path
    ) -> None:
        """`opentelemetry-instrument celery -A app worker`: the distro's provider takes the spans, the
        stock Celery instrumentation it switched on is switched off with a warning."""
        command = str(Path(sys.executable).parent / "opentelemetry-instrument")
        from tests.integration.user_apps.plain_app import app  # noqa: PLC0415

        for worker in started(
            receiver,
            tmp_path,
            "tests.integration.user_apps.plain_app",
            "user_plain.noop",
            prefix=(command,),
            OTEL_TRACES_EXPORTER="otlp_proto_http",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_SERVICE_NAME="user-auto",
            SERVICE_NAME="",
        ):
            with trace_span("caller"):
                result = app.send_task("user_plain.add", (2, 3), queue=worker.queue)
            assert 5 == result.get(timeout=TIMEOUT)
            spans = wait_task_spans(receiver, result.id, {"publish user_plain.add", "run user_plain.add"})
            consumers = [s for s in spans if s.kind == "CONSUMER"]
            (publish,) = [s for s in spans if s.kind == "PRODUCER"]
            assert ["run user_plain.add"] == [s.name for s in consumers]
            assert "user-auto" == consumers[0].service_name
            assert publish.span_id == consumers[0].parent_span_id
            assert STOCK_SWITCHED_OFF in worker.log

    def test_leftover_instrument_call_in_worker(
        self, receiver: OtlpReceiver, client: Celery, tmp_path: Path
    ) -> None:
        """The stock docs' CeleryInstrumentor().instrument() in worker_process_init is refused, with a
        warning; each task still gets exactly one run span."""
        for worker in started(
            receiver, tmp_path, "tests.integration.user_apps.stock_leftover_app", "user_stock.noop"
        ):
            task_id = client.send_task("user_stock.add", (2, 3), queue=worker.queue).id
            assert 5 == client.AsyncResult(task_id).get(timeout=TIMEOUT)
            spans = wait_task_spans(receiver, task_id, {"run user_stock.add"})
            assert ["run user_stock.add"] == [s.name for s in spans if s.kind == "CONSUMER"]
            assert STOCK_REFUSED in worker.log
