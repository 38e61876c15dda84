"""instrument_celery with a real prefork worker on the real Redis, spans at a real OTLP receiver.

Written on tracehook's pytest plugin (tracing.testing), as a user's tests would be: the session's
receiver, this process as the producer, prefork workers of the test app, traces compared to trees.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from opentelemetry import baggage, context

from tests.integration import celery_app as tasks
from tests.integration.conftest import REDIS_URL, ROOT, port_open, worker_env
from tracing import instrument_celery, trace_span
from tracing.testing import (
    ExpectedSpan,
    OtlpReceiver,
    Worker,
    assert_trace,
    span,
    start_worker,
    trace_id_of,
)
from tracing.testing.plugin import WorkerFactory
from workers.config import celery_config

pytestmark = pytest.mark.integration
TIMEOUT = 30
APP = "tests.integration.celery_app"
RUN_ADD = "run tests.integration.celery_app.add"
PUBLISH_ADD = "publish tests.integration.celery_app.add"


def options(**env: str) -> dict[str, Any]:
    """A worker's queue of its own, also its default queue (the tasks it publishes itself go there)."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    return {"queues": (queue,), "env": worker_env(queue, **env)}


@pytest.fixture(scope="module")
def worker(tracehook_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One prefork worker (2 children) for the module."""
    with start_worker(
        APP, receiver=tracehook_receiver, cwd=ROOT, log_dir=tmp_path_factory.mktemp("worker"), **options()
    ) as started:
        yield started


@pytest.fixture
def receiver(tracehook_receiver: OtlpReceiver, tracehook_producer: Any) -> OtlpReceiver:
    """The session's receiver, this process exporting its spans to it."""
    return tracehook_receiver


def add(*then: ExpectedSpan) -> ExpectedSpan:
    """``add`` published, run, its own span, and what its run published next."""
    return span(PUBLISH_ADD)(span(RUN_ADD)("add.inner", *then))


def delay_to(queue: str) -> Any:
    """``add.delay(2, 3)`` itself: ``.delay`` takes no routing options, so for this call the app's default
    queue is the worker's (the router reads ``task_default_queue`` at each publish)."""
    conf = tasks.app.conf
    before = conf.task_default_queue
    conf.task_default_queue = queue
    try:
        return tasks.add.delay(2, 3)
    finally:
        conf.task_default_queue = before


CALLS: dict[str, Callable[[str], Any]] = {
    "delay": delay_to,
    "apply_async": lambda q: tasks.add.apply_async((2, 3), queue=q),
    "send_task": lambda q: tasks.app.send_task("tests.integration.celery_app.add", (2, 3), queue=q),
    "signature": lambda q: tasks.add.s(2, 3).set(queue=q).delay(),
    "signature_apply_async": lambda q: tasks.add.signature((2, 3)).apply_async(queue=q),
}


class TestWaysOfCalling:
    """Publish → run parentage and one trace, whatever way the task is called."""

    @pytest.mark.parametrize("how", list(CALLS))
    def test_one_trace(self, worker: Worker, receiver: OtlpReceiver, how: str) -> None:
        """caller → PRODUCER publish → CONSUMER run → the task's own span, all in the caller's trace."""
        with trace_span("caller") as caller:
            result = CALLS[how](worker.queue)
        assert 5 == result.get(timeout=TIMEOUT)
        run = {
            "celery.task_id": result.id,
            "messaging.message.id": result.id,
            "celery.retries": 0,
            "celery.attempt": 1,
            "celery.state": "SUCCESS",
            "messaging.destination.name": worker.queue,
            "messaging.system": "redis",
            "celery.queue_wait_ms": lambda ms: 0 <= ms < 10_000,
        }
        assert_trace(
            receiver,
            caller,
            span("caller")(
                span(PUBLISH_ADD, kind="PRODUCER", service="test-producer")(
                    span(RUN_ADD, kind="CONSUMER", service="test-worker", attributes=run)("add.inner")
                )
            ),
        )

    def test_unregistered_task_publish_span_ends(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """send_task to a name no worker knows: the publish span ends, the worker's refusal is a span."""
        with trace_span("caller") as caller:
            tasks.app.send_task("no.such.task", (1,), queue=worker.queue)
        _, publish, _ = assert_trace(
            receiver,
            caller,
            span("caller")(span("publish no.such.task")(span("run no.such.task", status="ERROR"))),
        )
        assert publish.end_ns > publish.start_ns

    def test_countdown_excluded_from_queue_wait(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """A countdown is recorded as scheduled delay, not as queue wait. A 2 s countdown counted as waiting
        would make the wait 2 s or more; a loaded machine starting the task late adds far less than 1.5 s."""
        with trace_span("caller") as caller:
            result = tasks.add.apply_async((1, 1), queue=worker.queue, countdown=2)
        assert 2 == result.get(timeout=TIMEOUT)
        waits = {
            "celery.scheduled_delay_ms": lambda ms: 1500 <= ms <= 2000,
            "celery.queue_wait_ms": lambda ms: ms < 1500,
        }
        assert_trace(
            receiver, caller, span("caller")(span(PUBLISH_ADD)(span(RUN_ADD, attributes=waits)("add.inner")))
        )


class TestHeaders:
    """Our headers are namespaced and string-valued; the user's own headers reach task.request untouched."""

    def test_user_headers_and_baggage(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """A user header arrives as sent; a user baggage is merged with the context's, not duplicated."""
        token = context.attach(baggage.set_baggage("from_ctx", "2"))
        try:
            with trace_span("caller"):
                result = tasks.echo_headers.apply_async(
                    ("x_tenant", "baggage", "traceparent", "tracehook_enqueued_at"),
                    queue=worker.queue,
                    headers={"x_tenant": "acct_4821", "baggage": "user_key=1"},
                )
        finally:
            context.detach(token)
        seen = result.get(timeout=TIMEOUT)
        assert "acct_4821" == seen["x_tenant"]
        entries = sorted(part.strip() for part in seen["baggage"].split(","))
        assert ["from_ctx=2", "user_key=1"] == entries
        assert seen["traceparent"].startswith("00-")
        assert isinstance(seen["tracehook_enqueued_at"], str)
        float(seen["tracehook_enqueued_at"])


class TestCanvases:
    """chain, group and chord: every member runs in the caller's trace."""

    def test_chain_of_three(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Each link is published from the previous link's run span."""
        with trace_span("caller") as caller:
            result = chain(tasks.add.s(1, 1), tasks.add.s(2), tasks.add.s(3)).apply_async(queue=worker.queue)
        assert 7 == result.get(timeout=TIMEOUT)
        spans = assert_trace(receiver, caller, span("caller")(add(add(add()))))
        assert 1 == len({run.attributes["celery.root_id"] for run in spans if run.name == RUN_ADD})

    def test_group_of_five(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Five members, one trace, one group id."""
        with trace_span("caller") as caller:
            result = group(tasks.add.s(i, i) for i in range(5)).apply_async(queue=worker.queue)
        assert [0, 2, 4, 6, 8] == result.get(timeout=TIMEOUT)
        spans = assert_trace(receiver, caller, span("caller")(*(add() for _ in range(5))))
        assert 1 == len({run.attributes["celery.group_id"] for run in spans if run.name == RUN_ADD})

    def test_chord_five_to_one(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Five header tasks, and the body published by the run of one of them, all in the caller's trace."""
        with trace_span("caller") as caller:
            result = chord((tasks.add.s(i, 1) for i in range(5)), tasks.total.s()).apply_async(
                queue=worker.queue
            )
        assert 15 == result.get(timeout=TIMEOUT)
        assert_trace(receiver, caller, span("caller")(*(add() for _ in range(5))), exact=False)
        total = "tests.integration.celery_app.total"
        assert_trace(receiver, caller, span(RUN_ADD)(span(f"publish {total}")(f"run {total}")), exact=False)


class TestOutcomes:
    """Retries, failures, expected errors and control flow end their spans with a clear status."""

    def test_retries_same_trace(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Three attempts, three CONSUMER spans in one trace, each retry published from the attempt before;
        retries are not errors."""
        name = "tests.integration.celery_app.flaky"

        def attempt(number: int, state: str, *then: ExpectedSpan, **more: Any) -> ExpectedSpan:
            facts = {"celery.attempt": number, "celery.state": state, **more}
            return span(f"publish {name}")(span(f"run {name}", status="UNSET", attributes=facts)(*then))

        with trace_span("caller") as caller:
            result = tasks.flaky.apply_async((3,), queue=worker.queue)
        assert 3 == result.get(timeout=TIMEOUT)
        failed_once = {"celery.retry.reason": lambda reason: "attempt 1 failed" in reason}
        assert_trace(
            receiver,
            caller,
            span("caller")(attempt(1, "RETRY", attempt(2, "RETRY", attempt(3, "SUCCESS")), **failed_once)),
        )

    def test_failure_recorded(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """A real failure: ERROR status and the exception with its stack."""
        with trace_span("caller") as caller:
            result = tasks.fail.apply_async(("boom",), queue=worker.queue)
        with pytest.raises(ValueError, match="boom"):
            result.get(timeout=TIMEOUT)
        name = "tests.integration.celery_app.fail"
        *_, run = assert_trace(
            receiver, caller, span("caller")(span(f"publish {name}")(span(f"run {name}", status="ERROR")))
        )
        (event,) = [attrs for evt, attrs in run.events if evt == "exception"]
        assert "ValueError" == event["exception.type"]
        assert "raise ValueError(message)" in event["exception.stacktrace"]

    @pytest.mark.parametrize(
        ("task", "state"),
        [(tasks.expected_failure, "FAILURE"), (tasks.ignored, "IGNORED"), (tasks.rejected, "REJECTED")],
    )
    def test_not_errors(self, worker: Worker, receiver: OtlpReceiver, task: Any, state: str) -> None:
        """task.throws, Ignore and Reject end the span without ERROR status."""
        with trace_span("caller") as caller:
            task.apply_async(queue=worker.queue)
        run = span(f"run {task.name}", status="UNSET", attributes={"celery.state": state})
        assert_trace(receiver, caller, span("caller")(span(f"publish {task.name}")(run)))

    def test_time_limit(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """A task killed by its hard time limit still ends in its trace, as an ERROR."""
        with trace_span("caller") as caller:
            result = tasks.sleep.apply_async((5,), queue=worker.queue, time_limit=1)
        with pytest.raises(Exception, match=r"TimeLimitExceeded|Time limit"):
            result.get(timeout=TIMEOUT)
        name = "tests.integration.celery_app.sleep"
        spans = assert_trace(
            receiver,
            caller,
            span("caller")(
                span(f"publish {name}")(
                    span(f"run {name}", status="ERROR", attributes={"celery.state": "FAILURE"}),
                    span(f"run {name}", status="ERROR", attributes={"celery.state": "INTERRUPTED"}),
                )
            ),
        )
        assert 1 == sum("TimeLimitExceeded" in run.status_message for run in spans)


class TestRevoked:
    """A task revoked before it ran still ends in its trace, with a clear status."""

    def test_revoked_before_eta(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Revoked while waiting for its countdown: one ERROR run span marked revoked, in the caller's trace."""
        with trace_span("caller") as caller:
            result = tasks.add.apply_async((1, 1), queue=worker.queue, countdown=3)
        tasks.app.control.revoke(result.id)
        revoked = {"celery.revoked.reason": "revoked", "celery.state": "REVOKED"}
        assert_trace(
            receiver,
            caller,
            span("caller")(span(PUBLISH_ADD)(span(RUN_ADD, status="ERROR", attributes=revoked))),
        )


class TestLogs:
    """Worker log lines carry the task's trace, task id and the event fields from baggage, then nothing."""

    def test_task_log_context(self, worker: Worker, receiver: OtlpReceiver) -> None:
        """Lines inside the task have trace_id/task_id/event_id; the next task's lines don't."""
        token = context.attach(baggage.set_baggage("event_id", "evt_123"))
        try:
            with trace_span("caller") as caller:
                result = tasks.log_event.apply_async(("evt_123",), queue=worker.queue)
        finally:
            context.detach(token)
        result.get(timeout=TIMEOUT)
        after = tasks.add.apply_async((5, 5), queue=worker.queue)
        after.get(timeout=TIMEOUT)
        trace_id = trace_id_of(caller)
        lines = [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]
        done = [
            line for line in lines if line.get("event") == "work.done" and line.get("trace_id") == trace_id
        ]
        assert done, worker.log[-2000:]
        assert ("evt_123", result.id, "test-worker") == (
            done[0]["event_id"],
            done[0]["task_id"],
            done[0]["service"],
        )
        assert len(done[0]["span_id"]) == 16
        adding = [line for line in lines if line.get("event") == "adding" and line.get("task_id") == after.id]
        assert adding
        assert "event_id" not in adding[0]


class TestWorkerLifecycle:
    """No span of a finished task is lost when a worker stops or a child is recycled."""

    def test_sigterm_loses_nothing(self, receiver: OtlpReceiver, tracehook_worker: WorkerFactory) -> None:
        """With export held back (60 s schedule), SIGTERM still delivers every finished task's span."""
        slow_export = tracehook_worker(APP, **options(OTEL_BSP_SCHEDULE_DELAY="60000"))
        with trace_span("caller") as caller:
            results = [tasks.add.apply_async((i, 0), queue=slow_export.queue) for i in range(6)]
        assert list(range(6)) == [r.get(timeout=TIMEOUT) for r in results]
        assert 0 == slow_export.stop(signal.SIGTERM)
        assert_trace(receiver, caller, span("caller")(*(add() for _ in range(6))))

    def test_max_tasks_per_child_loses_nothing(
        self, receiver: OtlpReceiver, tracehook_worker: WorkerFactory
    ) -> None:
        """Each child runs one task and exits; its span arrives anyway."""
        recycled = tracehook_worker(
            APP, extra_args=("--max-tasks-per-child=1",), **options(OTEL_BSP_SCHEDULE_DELAY="60000")
        )
        with trace_span("caller") as caller:
            results = [tasks.add.apply_async((i, 1), queue=recycled.queue) for i in range(4)]
        assert [1, 2, 3, 4] == [r.get(timeout=TIMEOUT) for r in results]
        assert_trace(receiver, caller, span("caller")(*(add() for _ in range(4))))


class TestRabbitMQ:
    """The same propagation with RabbitMQ as the broker."""

    def test_propagation_over_amqp(self, receiver: OtlpReceiver, tracehook_worker: WorkerFactory) -> None:
        """publish → run in one trace over amqp://."""
        if not port_open("127.0.0.1", 5672):
            pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
        broker = "amqp://guest:guest@127.0.0.1:5672//"
        rabbit_app = Celery("rabbit_producer")
        rabbit_app.conf.update(celery_config({"CELERY_BROKER_URL": broker, "REDIS_URL": REDIS_URL}))
        instrument_celery(rabbit_app)
        rabbit = tracehook_worker(APP, ready_timeout=None, **options(CELERY_BROKER_URL=broker))
        rabbit.wait_ready(client=rabbit_app)
        with trace_span("caller") as caller:
            result = rabbit_app.send_task("tests.integration.celery_app.add", (20, 22), queue=rabbit.queue)
        assert 42 == result.get(timeout=TIMEOUT)
        over_amqp = span(RUN_ADD, attributes={"messaging.system": "rabbitmq"})("add.inner")
        assert_trace(receiver, caller, span("caller")(span(PUBLISH_ADD)(over_amqp)))
