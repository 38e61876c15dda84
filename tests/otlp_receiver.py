"""The tests' OTLP/HTTP receiver: the one tracehook ships for users' tests, in ``tracing.testing``."""

from __future__ import annotations

from tracing.testing._receiver import Mode, OtlpReceiver, ReceivedSpan, start_receiver

__all__ = ["Mode", "OtlpReceiver", "ReceivedSpan", "start_receiver"]
