"""Scrubbing: sensitive keys redacted, card numbers and SSNs masked, in spans, events and logs alike."""

from __future__ import annotations

import re

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link

from tests.conftest import CapturedLogs
from tracing import REDACTED, record_error, scrub_mapping, scrub_text, trace_span
from tracing.scrubbing import luhn_valid, may_need_scrubbing


def _luhn_complete(body: str) -> str:
    """Append the check digit that makes ``body`` Luhn-valid."""
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, as written): a Luhn-valid 13-19 digit number, written whole or grouped by four."""
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    digits = _luhn_complete(body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    written = separator.join(digits[i : i + 4] for i in range(0, len(digits), 4)) if separator else digits
    return digits, written


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(min_value=1, max_value=899))
    group = draw(st.integers(min_value=1, max_value=99))
    serial = draw(st.integers(min_value=1, max_value=9999))
    return f"{area:03d}-{group:02d}-{serial:04d}"


# Text around a secret: anything, as long as the character touching it is not a letter, digit or "_".
_around = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_edge = st.sampled_from([" ", ":", "=", "(", ")", ",", ";", "\n", "\t", "'", '"', "/", "#"])


def _contains_number(text: str, digits: str) -> bool:
    """True when the digits appear in ``text`` as a run, whatever separators are between them."""
    pattern = r"[ -]?".join(digits)
    return re.search(pattern, text) is not None


class TestScrubText:
    """Numbers inside strings are masked to their last four digits."""

    @given(card=card_numbers(), before=_around, after=_around, left=_edge, right=_edge)
    def test_no_card_number_survives(
        self, card: tuple[str, str], before: str, after: str, left: str, right: str
    ) -> None:
        """A Luhn-valid card number standing alone anywhere in a string never survives, last 4 kept."""
        _, written = card
        scrubbed = scrub_text(f"{before}{left}{written}{right}{after}")
        # Masking keeps the length, so the card is where it was written: at most its last 4 digits show.
        start = len(before) + len(left)
        segment = scrubbed[start : start + len(written)]
        assert sum(char.isdigit() for char in segment) <= 4, (segment, scrubbed)

    @given(ssn=ssns(), before=_around, after=_around, left=_edge, right=_edge)
    def test_no_ssn_survives(self, ssn: str, before: str, after: str, left: str, right: str) -> None:
        """An SSN standing alone never survives; it becomes ***-**-NNNN."""
        scrubbed = scrub_text(f"{before}{left}{ssn}{right}{after}")
        assert ssn not in scrubbed
        assert f"***-**-{ssn[-4:]}" in scrubbed

    @pytest.mark.parametrize(
        "text",
        [
            "wo_10442",
            "acct_4111111111111111",  # part of an identifier
            "x4111111111111111",
            "4111111111111111x",
            "order 41111111111111111111",  # 20 digits: not a card
            "tel +1-555-0142 on 2027-01-31",
            "amount 1850.00 USD",
            "evt_01JD8W0C2V7K3M4N5P6Q7R8S9Z",
        ],
    )
    def test_leaves_other_numbers_alone(self, text: str) -> None:
        """Identifiers, phone numbers, dates and amounts are not masked."""
        assert text == scrub_text(text)

    def test_examples(self) -> None:
        """The fixtures' card and SSN are masked to the last four."""
        assert scrub_text("paid with 4111111111111111") == "paid with ************1111"
        assert scrub_text("card 4111-1111-1111-1111.") == "card ****-****-****-1111."
        assert scrub_text("ssn 078-05-1120") == "ssn ***-**-1120"


class TestScrubMapping:
    """Keys that name secrets are redacted; identifiers are never touched."""

    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "api_key",
            "X-Api-Key",
            "Authorization",
            "http.request.header.authorization",
            "payment.card_number",
            "ssn",
            "payer.ssn",
            "client_secret",
            "access_token",
            "webhook-signature",
            "cvv",
        ],
    )
    def test_sensitive_keys(self, key: str) -> None:
        """The value of a sensitive key becomes [REDACTED]."""
        assert {key: REDACTED} == scrub_mapping({key: "hunter2"})

    @pytest.mark.parametrize(
        "key", ["trace_id", "span_id", "task_id", "id", "payment_id", "card_last4", "tokens"]
    )
    def test_other_keys_kept(self, key: str) -> None:
        """Identifiers and ordinary keys keep their value."""
        assert {key: "abc"} == scrub_mapping({key: "abc"})

    def test_identifiers_never_masked(self) -> None:
        """An *_id holding a Luhn-valid number is an identifier, not a card."""
        assert scrub_mapping({"payment_id": "4111111111111111"}) == {"payment_id": "4111111111111111"}

    def test_nested_and_integers(self) -> None:
        """Nested mappings and lists are scrubbed; an int card number becomes a masked string."""
        scrubbed = scrub_mapping(
            {"payer": {"ssn": "078-05-1120", "notes": ["card 4111111111111111"]}, "number": 4111111111111111}
        )
        assert scrubbed == {
            "payer": {"ssn": REDACTED, "notes": ["card ************1111"]},
            "number": "************1111",
        }

    def test_negative_integers(self) -> None:
        """A large negative int is kept (it used to raise, dropping the span); a negative card is masked."""
        assert {"n": -100000000000} == scrub_mapping({"n": -100000000000})
        assert {"n": "-************1111"} == scrub_mapping({"n": -4111111111111111})


_keys = st.sampled_from(["note", "api_key", "payment_id", "id", "amount", "http.url", "payer.ssn", "x"])
_scalars = st.one_of(
    st.text(alphabet="0123456789 -+x:", max_size=24),
    st.text(max_size=12),
    st.integers(),
    st.integers(min_value=10**11, max_value=10**19),
    st.floats(allow_nan=False),
    st.booleans(),
    card_numbers().map(lambda card: card[1]),
    ssns(),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3).map(tuple))


class TestMayNeedScrubbing:
    """The quick check never says "clean" for a mapping that scrubbing would change."""

    @given(values=st.dictionaries(_keys, _values, max_size=6))
    def test_false_means_unchanged(self, values: dict[str, object]) -> None:
        """Whenever the check says no, scrub_mapping leaves every value as it is."""
        if not may_need_scrubbing(values):
            assert values == scrub_mapping(values)

    @given(card=card_numbers(), ssn=ssns())
    def test_secrets_are_flagged(self, card: tuple[str, str], ssn: str) -> None:
        """A card number or an SSN in a string, alone or in a sequence, is flagged."""
        _, written = card
        assert may_need_scrubbing({"note": f"paid {written}"})
        assert may_need_scrubbing({"note": (f"ssn {ssn}",)})

    def test_int_card_and_secret_key_flagged(self) -> None:
        """An int card number and a key naming a secret are flagged."""
        assert may_need_scrubbing({"n": 4111111111111111})
        assert may_need_scrubbing({"token": "x"})

    def test_clean_attributes_pass(self) -> None:
        """Everyday attributes are not flagged: short strings, phone numbers, ids, amounts."""
        values = {"http.method": "POST", "phone": "+1-555-0142", "payment_id": "4111111111111111", "n": 3}
        assert not may_need_scrubbing({**values, "amount": 1850.5, "ok": True, "tags": ("a", "b")})


class TestSpansAreScrubbed:
    """The span pipeline scrubs attributes, events, exception messages and status, whoever set them."""

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50, deadline=None)
    @given(card=card_numbers(), ssn=ssns(), left=_edge)
    def test_no_card_or_ssn_in_exported_spans(
        self, span_exporter: InMemorySpanExporter, card: tuple[str, str], ssn: str, left: str
    ) -> None:
        """Attributes, events and exception messages never carry a card number or SSN."""
        span_exporter.clear()
        digits, written = card
        text = f"card{left}{written} ssn{left}{ssn}"
        with trace_span("op", attributes={"note": text, "list": [text]}) as span:
            span.set_attribute("later", text)
            span.add_event("evt", {"detail": text})
            record_error(span, ValueError(text))
        (exported,) = span_exporter.get_finished_spans()
        dump = (
            repr(dict(exported.attributes or {}))
            + repr([(e.name, dict(e.attributes or {})) for e in exported.events])
            + str(exported.status.description)
        )
        assert not _contains_number(dump, digits)
        assert ssn not in dump

    def test_sensitive_attribute_redacted(self, span_exporter: InMemorySpanExporter) -> None:
        """An attribute named like a secret is exported as [REDACTED]."""
        with trace_span("op", attributes={"rentvine.api_key": "rv_live_abc"}) as span:
            span.set_attribute("http.request.header.authorization", "Bearer xyz")
        (exported,) = span_exporter.get_finished_spans()
        assert exported.attributes is not None
        assert exported.attributes["rentvine.api_key"] == REDACTED
        assert exported.attributes["http.request.header.authorization"] == REDACTED

    def test_link_attributes_scrubbed(self, span_exporter: InMemorySpanExporter) -> None:
        """A link's attributes are scrubbed like the span's own."""
        with trace_span("earlier") as earlier:
            pass
        link = Link(earlier.get_span_context(), {"note": "card 4111111111111111", "api_key": "k"})
        with trace_span("op", links=[link]):
            pass
        exported = next(span for span in span_exporter.get_finished_spans() if span.name == "op")
        assert {"note": "card ************1111", "api_key": REDACTED} == dict(
            exported.links[0].attributes or {}
        )

    def test_clean_span_passes_unchanged(self, span_exporter: InMemorySpanExporter) -> None:
        """A span with nothing to scrub keeps its attributes exactly, and gets no ``slow`` flag."""
        with trace_span("op", attributes={"a": "b", "n": 3, "phone": "+1-555-0142"}):
            pass
        (exported,) = span_exporter.get_finished_spans()
        assert dict(exported.attributes or {}) == {"a": "b", "n": 3, "phone": "+1-555-0142"}


class TestLogsAreScrubbed:
    """Log lines, from structlog and from the stdlib, are scrubbed the same way."""

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50, deadline=None)
    @given(card=card_numbers(), ssn=ssns(), left=_edge)
    def test_no_card_or_ssn_in_log_lines(
        self, captured_logs: CapturedLogs, card: tuple[str, str], ssn: str, left: str
    ) -> None:
        """Neither the event text, fields, nor nested fields carry a card number or SSN."""
        captured_logs.stream.truncate(0)
        captured_logs.stream.seek(0)
        digits, written = card
        text = f"card{left}{written} ssn{left}{ssn}"
        structlog.get_logger("t").info(text, detail=text, nested={"deep": [text]})
        import logging  # noqa: PLC0415

        logging.getLogger("third.party").warning("seen %s", text)
        output = captured_logs.text
        assert output.count("\n") == 2
        assert not _contains_number(output, digits)
        assert ssn not in output

    def test_sensitive_fields_redacted(self, captured_logs: CapturedLogs) -> None:
        """A field named like a secret is written as [REDACTED]."""
        structlog.get_logger("t").info("calling", api_key="rv_live_abc", password="pw")
        (line,) = captured_logs.lines
        assert (line["api_key"], line["password"]) == (REDACTED, REDACTED)
        assert "rv_live_abc" not in captured_logs.text
