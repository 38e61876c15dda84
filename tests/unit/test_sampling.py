"""The rule-based sampler: the decision table, determinism, and parent-based behaviour."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from tracing import OperationBasedSampler, RuleBasedSampler, build_sampler
from workflows.settings import load_app_settings

# Trace ids whose low 64 bits put them at a known place in [0, 1).
LOW = 1  # ~0.0: sampled by any rate above zero
HIGH = (1 << 64) - 1  # ~1.0: sampled only at rate 1.0
MID = 1 << 63  # 0.5


def decide(
    sampler: RuleBasedSampler, trace_id: int, name: str, attributes: dict[str, str] | None = None
) -> bool:
    result = sampler.should_sample(None, trace_id, name, attributes=attributes)
    return result.decision == Decision.RECORD_AND_SAMPLE


class TestDecisionTable:
    """Root decisions by rule: emergency → emergency rate, health → 1%, the rest → the sampling rate."""

    @pytest.mark.parametrize(
        ("name", "attributes", "rule"),
        [
            ("webhook.work_order.created", {"workflow.priority": "emergency"}, "emergency"),
            ("webhook.work_order.created", {"workflow.priority": "critical"}, "emergency"),
            ("webhook.payment.received", None, "emergency"),
            ("anything", {"sampling.priority": "critical"}, "emergency"),
            ("GET /healthz", None, "health"),
            ("health_check", {"sampling.priority": "low"}, "health"),
            ("readyz", None, "health"),
            ("webhook.lease.expired", {"workflow.priority": "normal"}, "default"),
            ("webhook.work_order.created", None, "default"),
        ],
    )
    def test_rule_for(self, name: str, attributes: dict[str, str] | None, rule: str) -> None:
        """Each kind of root span falls under the documented rule (the domain names payments)."""
        assert rule == RuleBasedSampler(0.1, emergency_names=["Payment"]).rule_for(name, attributes)

    def test_names_are_the_domains_to_give(self) -> None:
        """The library knows no domain word: a payment is an emergency only when the domain says so, as
        the RentVine settings and the guide's OperationBasedSampler do."""
        assert "default" == RuleBasedSampler(0.1).rule_for("webhook.payment.received", None)
        assert "emergency" == OperationBasedSampler(0.1).rule_for("webhook.payment.received", None)
        names = load_app_settings({}).tracing.emergency_names
        assert "emergency" == RuleBasedSampler(0.1, emergency_names=names).rule_for("payment.failed", None)

    def test_rate_zero_keeps_emergencies_only(self) -> None:
        """TRACE_SAMPLING_RATE=0: ordinary roots dropped; emergencies and payments kept."""
        sampler = RuleBasedSampler(rate=0.0, emergency_rate=1.0, emergency_names=("payment",))
        for trace_id in (LOW, MID, HIGH):
            assert decide(sampler, trace_id, "webhook.work_order.created", {"workflow.priority": "emergency"})
            assert decide(sampler, trace_id, "webhook.payment.failed")
            assert not decide(
                sampler, trace_id, "webhook.work_order.created", {"workflow.priority": "normal"}
            )

    def test_health_checks_at_one_percent(self) -> None:
        """Health checks are kept at 1%: low trace ids kept, the rest dropped, whatever the main rate."""
        sampler = RuleBasedSampler(rate=1.0)
        assert decide(sampler, LOW, "GET /healthz")
        assert not decide(sampler, MID, "GET /healthz")
        kept = sum(decide(sampler, random.getrandbits(128), "health_check") for _ in range(20_000))
        assert 100 <= kept <= 320  # 1% of 20,000 = 200, with room for chance

    def test_ratio_for_ordinary_roots(self) -> None:
        """The sampling rate is the fraction of ordinary roots kept."""
        sampler = RuleBasedSampler(rate=0.25)
        kept = sum(decide(sampler, random.getrandbits(128), "webhook.lease.expired") for _ in range(20_000))
        assert 4_500 <= kept <= 5_500


class TestDeterminism:
    """The decision is a function of the trace id, so every process of a trace agrees."""

    def test_same_trace_id_same_decision(self) -> None:
        """Two samplers with the same settings (two processes) decide alike for every trace id."""
        first, second = RuleBasedSampler(0.5), RuleBasedSampler(0.5)
        for _ in range(2_000):
            trace_id = random.getrandbits(128)
            assert decide(first, trace_id, "op") == decide(second, trace_id, "op")

    def test_boundaries(self) -> None:
        """Rate 0.5 keeps trace ids below the half-way mark and drops those above."""
        sampler = RuleBasedSampler(0.5)
        assert decide(sampler, MID - 1, "op")
        assert not decide(sampler, MID, "op")


class TestParentBased:
    """Children follow their parent's decision, local or remote."""

    def test_children_follow_parent(self) -> None:
        """A sampled remote parent makes the child sampled even at rate 0; an unsampled one drops it."""
        provider = TracerProvider(sampler=build_sampler(rate=0.0, emergency_rate=0.0))
        tracer = provider.get_tracer("t")
        for flags, expected in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
            parent = SpanContext(trace_id=HIGH, span_id=7, is_remote=True, trace_flags=TraceFlags(flags))
            ctx = set_span_in_context(NonRecordingSpan(parent))
            span = tracer.start_span("child", context=ctx)
            assert expected == span.get_span_context().trace_flags.sampled
            span.end()

    def test_root_uses_rules(self) -> None:
        """A root span is decided by the rules, on the attributes given at start."""
        provider = TracerProvider(sampler=build_sampler(rate=0.0))
        tracer = provider.get_tracer("t")
        kept = tracer.start_span("webhook.work_order.created", attributes={"workflow.priority": "emergency"})
        dropped = tracer.start_span("webhook.work_order.created", attributes={"workflow.priority": "normal"})
        assert kept.is_recording()
        assert not dropped.is_recording()
