"""Head sampling by rule: emergencies kept, health checks thinned, the rest at the configured ratio.

The decision for a root span is taken on its name and the attributes given at span start, and it is a
pure function of the trace id (like the SDK's ``TraceIdRatioBased``), so every process that sees the same
trace id and rule agrees. Child spans follow their parent (``ParentBased``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = [
    "CRITICAL_PRIORITIES",
    "PRIORITY_ATTRIBUTES",
    "RuleBasedSampler",
    "Sampler",
    "build_sampler",
]

PRIORITY_ATTRIBUTES: Final = ("workflow.priority", "sampling.priority", "priority")
CRITICAL_PRIORITIES: Final = frozenset({"emergency", "critical", "urgent"})
_LOW_PRIORITIES: Final = frozenset({"low"})
_HEALTH_WORDS: Final = ("health", "readyz", "livez", "ping")
_TRACE_ID_LIMIT: Final = (1 << 64) - 1


class Sampler(sampling.Sampler):
    """The SDK's sampler base with a default description, so a subclass need only decide.

    The guide's ``OperationBasedSampler`` example (docs/guide.md) subclasses a sampler and defines
    ``should_sample`` alone; the SDK's abstract base would refuse to instantiate it.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Adapt a subclass's ``should_sample`` written with the guide's parameter names.

        ``ParentBased`` calls its root sampler by keyword (``parent_context=...``) while the guide's
        example names that parameter ``context``; and the guide returns ``SamplingResult(decision)``
        without attributes, which would drop every attribute given at span start.
        """
        super().__init_subclass__(**kwargs)
        method = cls.__dict__.get("should_sample")
        if method is None or not cls.__dict__.get("_adapt_should_sample", True):
            return

        @functools.wraps(method)
        def should_sample(
            self: Sampler,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> sampling.SamplingResult:
            # Positionally: the SDK's parameters are all positional, whatever a subclass names them.
            result = method(self, parent_context, trace_id, name, kind, attributes, links, trace_state)
            if result.decision != sampling.Decision.DROP and not result.attributes and attributes:
                return sampling.SamplingResult(result.decision, attributes, result.trace_state)
            return cast(sampling.SamplingResult, result)

        cls.should_sample = should_sample  # type: ignore[method-assign]

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        """Keep everything; subclasses override this with their rule."""
        return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, attributes, trace_state)

    def get_description(self) -> str:
        """The class name, which is what the SDK shows in diagnostics."""
        return type(self).__name__


def _bound(rate: float) -> int:
    return round(rate * (_TRACE_ID_LIMIT + 1))


class RuleBasedSampler(Sampler):
    """Root sampler that picks a ratio by rule, then decides deterministically on the trace id.

    Rules, first match wins:

    1. an attribute in :data:`PRIORITY_ATTRIBUTES` is emergency/critical, or the name contains one of
       ``emergency_names`` (the domain's own, such as ``payment``) → ``emergency_rate``;
    2. the name looks like a health check, or the priority is ``low`` → ``health_rate``;
    3. anything else → ``rate``.

    Args:
        rate: ratio for ordinary root operations (TRACE_SAMPLING_RATE).
        emergency_rate: ratio for emergency/critical operations (TRACE_EMERGENCY_SAMPLING_RATE).
        health_rate: ratio for health checks (1% by default).
        emergency_names: words (any case) whose presence in a root span's name makes it an emergency,
            whatever its attributes say; none by default.
    """

    # Ours follows the SDK's signature and returns the start attributes: no adapter on the hot path.
    _adapt_should_sample = False

    def __init__(
        self,
        rate: float,
        emergency_rate: float = 1.0,
        health_rate: float = 0.01,
        *,
        emergency_names: Iterable[str] = (),
    ) -> None:
        self.rate = rate
        self.emergency_rate = emergency_rate
        self.health_rate = health_rate
        self.emergency_names = tuple(word.lower() for word in emergency_names)
        self._bounds = {
            "emergency": _bound(emergency_rate),
            "health": _bound(health_rate),
            "default": _bound(rate),
        }

    def rule_for(self, name: str, attributes: Attributes) -> str:
        """Name the rule that applies to a root span: ``emergency``, ``health`` or ``default``."""
        priority = ""
        if attributes:
            for key in PRIORITY_ATTRIBUTES:
                value = attributes.get(key)
                if isinstance(value, str):
                    priority = value.lower()
                    break
        lowered = name.lower()
        if priority in CRITICAL_PRIORITIES or any(word in lowered for word in self.emergency_names):
            return "emergency"
        if priority in _LOW_PRIORITIES or any(word in lowered for word in _HEALTH_WORDS):
            return "health"
        return "default"

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        """Decide for a root span; the same trace id and rule always give the same answer."""
        rule = self.rule_for(name, attributes)
        decision = (
            sampling.Decision.RECORD_AND_SAMPLE
            if trace_id & _TRACE_ID_LIMIT < self._bounds[rule]
            else sampling.Decision.DROP
        )
        if trace_state is None:
            trace_state = get_current_span(parent_context).get_span_context().trace_state
        return sampling.SamplingResult(
            decision, attributes if decision != sampling.Decision.DROP else None, trace_state
        )

    def get_description(self) -> str:
        """Describe the ratios, as the SDK's samplers do."""
        return (
            f"RuleBasedSampler{{rate={self.rate},emergency={self.emergency_rate},health={self.health_rate}}}"
        )


def build_sampler(
    rate: float,
    emergency_rate: float = 1.0,
    health_rate: float = 0.01,
    *,
    emergency_names: Iterable[str] = (),
) -> sampling.Sampler:
    """The sampler ``configure_tracing`` installs: parent-based, :class:`RuleBasedSampler` at the root."""
    return sampling.ParentBased(
        root=RuleBasedSampler(rate, emergency_rate, health_rate, emergency_names=emergency_names)
    )
