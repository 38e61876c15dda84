"""Metrics in one process and across forks: recording, labels, exemplars, snapshots and their merge."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tests.metrics_scrape import Scrape
from tracing import TracingSettings, configure_tracing, trace_batch, trace_span
from tracing._snapshots import RETIRED, SnapshotDirectory, SnapshotWriter, merge_snapshots, process_snapshot
from tracing.metrics import (
    BATCH_ITEMS,
    DURATION_BUCKETS_S,
    TASK_DURATION,
    TASKS,
    MetricSpec,
    configure_metrics,
    count,
    define,
    metric_specs,
    metrics_enabled,
    observe,
    start_at_zero,
)
from tracing.prometheus import metrics_registry, render
from tracing.settings import SettingsError, load_settings
from workflows.metrics import currency_label, event_type_label, outcome_of, priority_label


def exposition(*, openmetrics: bool = False, directory: Path | None = None) -> Scrape:
    accept = "application/openmetrics-text" if openmetrics else None
    body, _ = render(metrics_registry(directory), accept)
    return Scrape.parse(body.decode(), openmetrics=openmetrics)


@pytest.fixture
def metrics(settings: TracingSettings) -> TracingSettings:
    """Metrics set up in this process."""
    assert configure_metrics(settings)
    return settings


class TestRecording:
    """count/observe land in the exposition under the spec's Prometheus names, with the spec's labels."""

    def test_counter_and_histogram(self, metrics: TracingSettings) -> None:
        """Two counts and three observations read back as a counter ``_total`` and a histogram."""
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        for value in (0.002, 0.2, 7.0):
            observe(TASK_DURATION, value, {"task": "t"})
        scraped = exposition()
        assert 2 == scraped.value("tracehook_tasks_total", task="t", status="succeeded")
        assert 3 == scraped.value("tracehook_task_duration_seconds_count", task="t")
        assert 7.202 == pytest.approx(scraped.value("tracehook_task_duration_seconds_sum", task="t"))
        assert 2 == scraped.value("tracehook_task_duration_seconds_bucket", task="t", le="0.25")

    def test_only_the_specs_labels(self, metrics: TracingSettings) -> None:
        """A label the spec does not name is dropped; a missing one is empty: ids cannot slip in."""
        count(TASKS, 1, {"task": "t", "status": "failed", "task_id": "abc123"})
        count(TASKS, 1, {"task": "t"})
        samples = [s for s in exposition().samples if s.name == "tracehook_tasks_total"]
        assert [{"status", "task"}, {"status", "task"}] == [set(s.labels) for s in samples]

    def test_not_configured_records_nothing(self) -> None:
        """Without configure_metrics the calls are no-ops, and nothing is exposed."""
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        assert not metrics_enabled()
        assert [] == exposition().samples

    def test_start_at_zero(self, metrics: TracingSettings) -> None:
        """The given series are exported at 0 before anything is counted; counting adds to them."""
        start_at_zero(TASKS, ({"task": "t", "status": status} for status in ("failed", "dead_lettered")))
        scraped = exposition()
        assert {("t", "failed", 0.0), ("t", "dead_lettered", 0.0)} == {
            (s.labels["task"], s.labels["status"], s.value) for s in scraped.samples
        }
        count(TASKS, 1, {"task": "t", "status": "dead_lettered"})
        assert 1 == exposition().value("tracehook_tasks_total", task="t", status="dead_lettered")

    def test_histogram_starts_at_zero(self, metrics: TracingSettings) -> None:
        """A histogram's series started at 0 export every bucket, sum and count at 0; values add to them,
        and starting again later resets nothing."""
        start_at_zero(TASK_DURATION, [{"task": "a"}, {"task": "b"}])
        scraped = exposition()
        buckets = [s for s in scraped.samples if s.name == "tracehook_task_duration_seconds_bucket"]
        assert 2 * (len(DURATION_BUCKETS_S) + 1) == len(buckets)
        assert {0.0} == {s.value for s in scraped.samples}
        assert {"a", "b"} == scraped.label_values("tracehook_task_duration_seconds_count", "task")
        observe(TASK_DURATION, 0.2, {"task": "a"})
        start_at_zero(TASK_DURATION, [{"task": "a"}])
        scraped = exposition()
        assert 1 == scraped.value("tracehook_task_duration_seconds_count", task="a")
        assert 1 == scraped.value("tracehook_task_duration_seconds_bucket", task="a", le="0.25")
        assert 0 == scraped.value("tracehook_task_duration_seconds_count", task="b")

    def test_start_at_zero_not_configured(self) -> None:
        """Without configure_metrics, start_at_zero exports nothing and does not raise."""
        start_at_zero(TASKS, [{"task": "t", "status": "failed"}])
        assert [] == exposition().samples

    def test_disabled(self, settings: TracingSettings) -> None:
        """METRICS_ENABLED=false: configure_metrics says no and records nothing."""
        assert not configure_metrics(TracingSettings(exporter="none", metrics_enabled=False))
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        assert [] == exposition().samples

    def test_a_failing_instrument_never_raises(
        self, metrics: TracingSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exception inside the aggregation is caught and logged; the caller goes on."""

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("aggregation exploded")

        monkeypatch.setattr("tracing.metrics._key", broken)
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        observe(TASK_DURATION, 1.0, {"task": "t"})
        assert 2 == sum("could not record metric" in record.getMessage() for record in caplog.records)

    def test_batch_items(self, metrics: TracingSettings) -> None:
        """trace_batch counts its items by outcome under the operation's name."""

        def process(item: int) -> int:
            if item % 4 == 0:
                raise ValueError(item)
            return item

        trace_batch("square", list(range(1, 11)), process, batch_size=3)
        scraped = exposition()
        assert 8 == scraped.value("tracehook_batch_items_total", operation="square", outcome="succeeded")
        assert 2 == scraped.value("tracehook_batch_items_total", operation="square", outcome="failed")

    def test_define_refuses_a_different_spec(self) -> None:
        """The same name with another kind or labels is a programming error, caught at import."""
        assert TASKS is define(TASKS)
        with pytest.raises(ValueError, match="already defined"):
            define(MetricSpec("tracehook_tasks", "histogram", "other"))
        assert BATCH_ITEMS in metric_specs()


class TestExemplars:
    """A histogram value recorded in a sampled span carries that span's trace id (OpenMetrics only)."""

    def test_sampled_span_is_the_exemplar(
        self, metrics: TracingSettings, span_exporter: InMemorySpanExporter
    ) -> None:
        """The bucket the value fell in names the span's trace and span id."""
        with trace_span("slow.operation") as span:
            observe(TASK_DURATION, 3.0, {"task": "t"})
        context = span.get_span_context()
        scraped = exposition(openmetrics=True)
        bucket = [
            s
            for s in scraped.samples
            if s.name == "tracehook_task_duration_seconds_bucket" and s.exemplar is not None
        ]
        assert ["5.0"] == [s.labels["le"] for s in bucket]
        assert format(context.trace_id, "032x") == bucket[0].exemplar.labels["trace_id"]
        assert format(context.span_id, "016x") == bucket[0].exemplar.labels["span_id"]
        assert 3.0 == bucket[0].exemplar.value
        assert set() == exposition().exemplar_trace_ids("tracehook_task_duration_seconds_bucket")

    def test_unsampled_span_gives_none(self, metrics: TracingSettings, settings: TracingSettings) -> None:
        """A dropped trace is no exemplar: it would lead nowhere."""
        configure_tracing(settings, exporter=InMemorySpanExporter(), sampler=ALWAYS_OFF, batch=False)
        with trace_span("dropped"):
            observe(TASK_DURATION, 3.0, {"task": "t"})
        assert set() == exposition(openmetrics=True).exemplar_trace_ids(
            "tracehook_task_duration_seconds_bucket"
        )

    def test_exemplar_kept_across_collections(
        self, metrics: TracingSettings, span_exporter: InMemorySpanExporter
    ) -> None:
        """The SDK hands an exemplar out once; later scrapes still show it until a newer value replaces it."""
        with trace_span("first") as span:
            observe(TASK_DURATION, 0.3, {"task": "t"})
        trace_id = format(span.get_span_context().trace_id, "032x")
        for _ in range(2):
            assert {trace_id} == exposition(openmetrics=True).exemplar_trace_ids(
                "tracehook_task_duration_seconds_bucket"
            )


class TestMerge:
    """Snapshots of several processes add up; exemplars keep the latest; bad files are skipped."""

    @staticmethod
    def histogram(counts: list[int], exemplar: list[Any] | None = None) -> dict[str, Any]:
        return {
            "kind": "histogram",
            "description": "d",
            "series": {
                "k": {
                    "labels": {"task": "t"},
                    "bounds": [1.0],
                    "counts": counts,
                    "sum": float(sum(counts)),
                    "count": sum(counts),
                    "exemplars": {"0": exemplar} if exemplar else {},
                }
            },
        }

    def test_counters_and_buckets_add(self) -> None:
        """Two children's counts of the same series are summed, bucket by bucket."""
        counter = {
            "kind": "counter",
            "description": "d",
            "series": {"k": {"labels": {"a": "1"}, "value": 2.0}},
        }
        merged = merge_snapshots(
            [
                {"c": counter, "h": self.histogram([1, 2])},
                {"c": counter, "h": self.histogram([3, 0])},
            ]
        )
        assert 4.0 == merged["c"]["series"]["k"]["value"]
        assert [4, 2] == merged["h"]["series"]["k"]["counts"]
        assert 6 == merged["h"]["series"]["k"]["count"]
        assert 2.0 == counter["series"]["k"]["value"], "the inputs are not changed"

    def test_latest_exemplar_wins(self) -> None:
        """Of two processes' exemplars for one bucket, the newer one is shown."""
        older = ["a" * 32, "1" * 16, 0.5, 100.0]
        newer = ["b" * 32, "2" * 16, 0.7, 200.0]
        merged = merge_snapshots([{"h": self.histogram([1, 0], newer)}, {"h": self.histogram([1, 0], older)}])
        assert newer == merged["h"]["series"]["k"]["exemplars"]["0"]

    def test_unreadable_file_is_skipped(self, tmp_path: Path) -> None:
        """A torn or foreign file in the directory does not stop the scrape."""
        alive = os.getpid()
        (tmp_path / f"{alive}-a.json").write_text(json.dumps({"h": self.histogram([1, 1])}))
        (tmp_path / f"{alive}-b.json").write_text("{not json")
        assert [[1, 1]] == [
            s["h"]["series"]["k"]["counts"] for s in SnapshotDirectory(tmp_path).snapshots() if s
        ]


class TestForkedChildren:
    """Each forked child reports only what it recorded; the parent's scrape is the sum of all of them."""

    def test_children_sum_without_the_parents_counts(self, metrics: TracingSettings, tmp_path: Path) -> None:
        """Parent counts 1; two children count 10 and 20 and write snapshots; the merged scrape says 31."""
        count(TASKS, 1, {"task": "t", "status": "succeeded"})
        pids = []
        for amount in (10, 20):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    count(TASKS, amount, {"task": "t", "status": "succeeded"})
                    writer = SnapshotWriter(tmp_path, interval_s=60).start()
                    writer.stop()
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert 0 == os.waitstatus_to_exitcode(status)
        assert sorted(pids) == sorted(int(path.name.split("-")[0]) for path in tmp_path.iterdir())
        for _ in range(2):
            assert 31 == exposition(directory=tmp_path).value("tracehook_tasks_total", task="t")
        assert [RETIRED] == [path.name for path in tmp_path.iterdir()], (
            "the exited children's files are folded"
        )
        assert (
            1
            == process_snapshot()["tracehook_tasks"]["series"]['{"status": "succeeded", "task": "t"}'][
                "value"
            ]
        )

    def test_fork_while_another_thread_holds_the_locks(
        self, metrics: TracingSettings, tmp_path: Path
    ) -> None:
        """A fork during a scrape (another thread inside the metrics locks) leaves the child able to record."""
        import signal  # noqa: PLC0415
        import threading  # noqa: PLC0415
        import time  # noqa: PLC0415

        import tracing._snapshots  # noqa: PLC0415
        import tracing.metrics  # noqa: PLC0415

        held, release = threading.Event(), threading.Event()

        def scrape_in_progress() -> None:
            with tracing.metrics._lock, tracing._snapshots._lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=scrape_in_progress)
        holder.start()
        assert held.wait(10)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    count(TASKS, 5, {"task": "t", "status": "succeeded"})
                    SnapshotWriter(tmp_path, interval_s=60).write()
                    code = 0
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 20
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            if done[0] == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child hung on a lock held by its parent's other thread")
            assert 0 == os.waitstatus_to_exitcode(done[1])
        finally:
            release.set()
            holder.join()
        assert 5 == exposition(directory=tmp_path).value("tracehook_tasks_total", task="t")


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def counter(value: float) -> dict[str, Any]:
    return {"c": {"kind": "counter", "description": "d", "series": {"k": {"labels": {}, "value": value}}}}


def total(directory: Path) -> float:
    return float(
        merge_snapshots(SnapshotDirectory(directory).snapshots()).get("c", counter(0)["c"])["series"]["k"][
            "value"
        ]
    )


class TestSnapshotDirectory:
    """Exited children are folded into one retired sum, once, even across a crash; living ones are read."""

    def test_exited_children_folded_living_ones_kept(self, tmp_path: Path) -> None:
        """The dead child's file goes into retired.state; the living one's stays; the sum never changes."""
        (tmp_path / f"{dead_pid()}-a.json").write_text(json.dumps(counter(5)))
        living = tmp_path / f"{os.getpid()}-b.json"
        living.write_text(json.dumps(counter(7)))
        directory = SnapshotDirectory(tmp_path)
        for _ in range(2):
            directory.compact()
            assert 12 == total(tmp_path)
        assert sorted([RETIRED, living.name]) == sorted(path.name for path in tmp_path.iterdir())

    def test_crash_between_fold_and_removal(self, tmp_path: Path) -> None:
        """retired.state already holds a file that is still there: it is counted once, then removed."""
        name = f"{dead_pid()}-a.json"
        (tmp_path / name).write_text(json.dumps(counter(5)))
        (tmp_path / RETIRED).write_text(json.dumps({"folded": [name], "snapshot": counter(5)}))
        assert 5 == total(tmp_path)
        SnapshotDirectory(tmp_path).compact()
        assert [RETIRED] == [path.name for path in tmp_path.iterdir()]
        assert 5 == total(tmp_path)


class TestLabels:
    """Label values come from small known sets, whatever a sender writes."""

    def test_event_type(self) -> None:
        """Known types pass; anything else, a sender's invention included, is ``unknown``."""
        assert "lease.expiring" == event_type_label("lease.expiring")
        assert "unknown" == event_type_label("lease.expiring.evt_123")
        assert "unknown" == event_type_label(None)

    def test_currency_priority_outcome(self) -> None:
        """ISO-like codes, the schema's priorities, and the intake's error codes mapped to outcomes."""
        assert ("USD", "other", "other") == (
            currency_label("USD"),
            currency_label("usd"),
            currency_label("US$1"),
        )
        assert ("emergency", "normal") == (priority_label("emergency"), priority_label("whatever"))
        assert ("rejected_signature", "too_large", "rejected") == (
            outcome_of("invalid_signature"),
            outcome_of("payload_too_large"),
            outcome_of("something_new"),
        )


class TestSettings:
    """METRICS_ENABLED and WORKER_METRICS_PORT are read with the other settings, validated."""

    def test_defaults_and_values(self) -> None:
        """On, port 9464 by default; both can be changed; 0 means no endpoint."""
        assert (True, 9464) == (load_settings({}).metrics_enabled, load_settings({}).worker_metrics_port)
        changed = load_settings({"METRICS_ENABLED": "false", "WORKER_METRICS_PORT": "0"})
        assert (False, 0) == (changed.metrics_enabled, changed.worker_metrics_port)

    @pytest.mark.parametrize("env", [{"WORKER_METRICS_PORT": "70000"}, {"METRICS_ENABLED": "maybe"}])
    def test_bad_values_name_the_variable(self, env: dict[str, str]) -> None:
        """A bad value stops start-up with the variable's name."""
        with pytest.raises(SettingsError, match=next(iter(env))):
            load_settings(env)
