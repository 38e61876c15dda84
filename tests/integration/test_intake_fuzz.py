"""Fuzzing the intake: whatever the body and headers, the answer is a 2xx or a 4xx, never a 5xx.

Two intakes are built once for the module (one verifying signatures, one with WEBHOOK_ALLOW_UNSIGNED) on
the real Redis, with a working publisher to a queue of the module's own that nobody consumes; hypothesis
drives them through ``httpx.ASGITransport`` from a blocking portal. Bodies: random bytes, random JSON
values, fixtures with fields dropped or retyped, deep nesting (up to 10,000 levels), huge numbers and
invalid UTF-8. Headers: valid, wrong, garbage, stale or missing signatures, several signatures, wrong
content types, and junk trace headers from the sender.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest
import redis
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import CapturedLogs
from tests.integration.conftest import REDIS_URL
from tracing import TracingSettings, instrument_celery
from workflows.events import EVENT_TYPES, FIXTURES, load_fixture
from workflows.intake import ROUTE, create_app
from workflows.queue import producer_app
from workflows.settings import AppSettings
from workflows.signing import decode_secret, new_secret, sign, signed_headers

pytestmark = pytest.mark.integration

DEDUPE_PREFIX = "tracehook:dedupe:"
LIMIT = 64 * 1024
ANSWERS = frozenset({200, 202, 400, 401, 413, 415, 422})
# Signing modes that must never get past the verifier of the signed intake.
FORGED = frozenset({"wrong-secret", "garbage", "missing", "stale", "no-v1"})
SIGNING = ("valid", "valid", "multi", *sorted(FORGED))

# --- bodies -----------------------------------------------------------------------------------------

ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Longer integers than Python's 4300-digit int-string limit are covered by
# tests/integration/test_intake.py::TestNotJson::test_integer_over_python_digit_limit.
huge_numbers = st.one_of(
    st.integers(min_value=-(10**4000), max_value=10**4000).map(lambda n: str(n).encode()),
    st.sampled_from(
        [
            b"1e999",
            b"-1e99999999",
            b"1" + b"0" * 5000 + b".5",
            b"0." + b"0" * 5000 + b"1",
            b"1.7976931348623157e308",
            b"5e-324",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"-0",
        ]
    ),
)
invalid_utf8 = st.sampled_from(
    [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xc0\xaf"]
)
# Valid JSON decoding to strings that UTF-8 cannot encode (lone surrogates), or to NUL and escapes.
odd_strings = st.sampled_from(
    [rb'"\ud800"', rb'"x\udfff"', rb'"\udc80\ud800"', rb'"\u0000"', rb'"\u001b[31m"']
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([10, 500, 900, 990, 1000, 10_000]))
    if draw(st.booleans()):
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    """A fixture with a fresh id, then fields dropped, retyped, or replaced by raw bytes."""
    payload: dict[str, Any] = load_fixture(draw(st.sampled_from(FIXTURES)))
    payload["id"] = f"evt_fuzz_{draw(st.uuids()).hex}"
    raw: dict[str, bytes] = {}
    for _ in range(draw(st.integers(0, 4))):
        target = payload if draw(st.booleans()) else payload.get("data")
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from(sorted(target) or ["id"]) | st.text(max_size=8))
        action = draw(st.sampled_from(["drop", "retype", "type", "huge", "deep", "utf8"]))
        if action == "drop":
            target.pop(key, None)
        elif action == "retype":
            target[key] = draw(json_values)
        elif action == "type":
            payload["type"] = draw(st.sampled_from(EVENT_TYPES) | st.text(max_size=20))
        else:
            sentinel = f"__raw_{len(raw)}__"
            target[key] = sentinel
            if action == "huge":
                raw[sentinel] = draw(huge_numbers)
            elif action == "deep":
                raw[sentinel] = draw(deep_nesting())
            elif draw(st.booleans()):
                raw[sentinel] = draw(odd_strings)
            else:
                raw[sentinel] = b'"' + b"x" + draw(invalid_utf8) + b'"'
    body = json.dumps(payload, allow_nan=True).encode()
    for sentinel, value in raw.items():
        body = body.replace(f'"{sentinel}"'.encode(), value)
    if draw(st.integers(0, 9)) == 0:
        body = body.decode("utf-8", errors="surrogateescape").encode("utf-16", errors="surrogatepass")
    return body


# Mutated fixtures three times as often as the rest: they are the bodies that get furthest into the intake.
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda value: json.dumps(value, allow_nan=True).encode()),
    mutated_fixture(),
    mutated_fixture(),
    mutated_fixture(),
    deep_nesting(),
    huge_numbers,
    st.integers(LIMIT + 1, 2 * LIMIT).map(lambda size: b" " * size),
)
# Mostly the right content type, so that most cases get past it to the JSON and schema checks.
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(["application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "application"]),
    ascii_text,
    st.none(),
)
trace_headers = st.dictionaries(
    st.sampled_from(["traceparent", "tracestate", "baggage"]), ascii_text, max_size=3
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "intake": draw(st.sampled_from(["signed", "unsigned"])),
        "body": draw(bodies),
        "signing": draw(st.sampled_from(SIGNING)),
        "msg_id": draw(st.just("") | ascii_text | st.uuids().map(lambda u: f"msg_fuzz_{u.hex}")),
        "content_type": draw(content_types),
        "extra": draw(trace_headers),
    }


# --- the module's intakes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret() -> str:
    return new_secret()


@pytest.fixture(scope="module")
def store() -> Iterator[redis.Redis[bytes]]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def queue(store: redis.Redis[bytes]) -> Iterator[str]:
    name = f"test-intake-fuzz-{uuid.uuid4().hex[:12]}"
    yield name
    store.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


@pytest.fixture(scope="module")
def dedupe_keys(store: redis.Redis[bytes]) -> Iterator[set[str]]:
    keys: set[str] = set()
    yield keys
    if keys:
        store.delete(*keys)


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with anyio.from_thread.start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="module")
def intakes(
    store: redis.Redis[bytes], queue: str, secret: str, portal: BlockingPortal
) -> Iterator[dict[str, httpx.AsyncClient]]:
    """Clients of the signed and the unsigned intake, sharing Redis and a working publisher."""
    publisher = producer_app({"REDIS_URL": REDIS_URL, "CELERY_DEFAULT_QUEUE": queue})
    clients: dict[str, httpx.AsyncClient] = {}
    for name, secrets in (("signed", (secret,)), ("unsigned", ())):
        app_settings = AppSettings(
            tracing=TracingSettings(service_name="tracehook-intake", exporter="none"),
            redis_url=REDIS_URL,
            webhook_secrets=secrets,
            allow_unsigned=not secrets,
            max_bytes=LIMIT,
        )
        app = create_app(app_settings, store=store, publisher=publisher, configure=False)
        clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")
    yield clients
    for client in clients.values():
        portal.call(client.aclose)
    instrument_celery(publisher).uninstrument()
    publisher.close()


def headers_for(case: dict[str, Any], secret: str) -> dict[str, str]:
    """Sign (or forge) the case's body at request time, so timestamps are current."""
    body: bytes = case["body"]
    msg_id: str = case["msg_id"] or f"msg_fuzz_{uuid.uuid4().hex}"
    mode: str = case["signing"]
    now = int(time.time())
    headers = signed_headers(secret, body, msg_id=msg_id, timestamp=now)
    stranger = sign(decode_secret(new_secret()), msg_id, now, body)
    if mode == "multi":
        headers["webhook-signature"] = f"{stranger} {headers['webhook-signature']}"
    elif mode == "wrong-secret":
        headers["webhook-signature"] = stranger
    elif mode == "garbage":
        headers["webhook-signature"] = "v1," + base64.b64encode(os.urandom(32)).decode() + " v1,@@ nonsense"
    elif mode == "no-v1":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif mode == "stale":
        headers = signed_headers(secret, body, msg_id=msg_id, timestamp=now - 3600)
    elif mode == "missing":
        headers = {}
    headers.pop("content-type", None)
    if case["content_type"] is not None:
        headers["content-type"] = case["content_type"]
    headers.update(case["extra"])
    return headers


def body_id(body: bytes) -> str | None:
    """The ``id`` of a body that is a JSON object with a string id (its dedupe key without webhook-id)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = payload.get("id") if isinstance(payload, dict) else None
    if not isinstance(found, str):
        return None
    try:
        found.encode()
    except UnicodeEncodeError:
        return None  # a lone surrogate: the intake refuses such ids (422) before it keys anything on them
    return found


class TestFuzz:
    """No body or header combination makes the intake answer 5xx; forged signatures never get in."""

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=requests())
    def test_never_5xx(
        self,
        intakes: dict[str, httpx.AsyncClient],
        portal: BlockingPortal,
        secret: str,
        dedupe_keys: set[str],
        span_exporter: InMemorySpanExporter,
        captured_logs: CapturedLogs,
        case: dict[str, Any],
    ) -> None:
        headers = headers_for(case, secret)
        for key in (headers.get("webhook-id"), body_id(case["body"])):
            if key:
                dedupe_keys.add(DEDUPE_PREFIX + key)
        post = functools.partial(intakes[case["intake"]].post, ROUTE, content=case["body"], headers=headers)

        response = portal.call(post)
        event(f"{case['intake']} {response.status_code}")

        assert response.status_code in ANSWERS, response.text
        assert secret not in response.text
        payload = response.json()
        if response.status_code >= 400:
            assert {"error", "detail"} == set(payload)
        else:
            assert payload["status"] in {"queued", "duplicate"}
        if case["intake"] == "signed" and case["signing"] in FORGED:
            assert response.status_code in {401, 413}
