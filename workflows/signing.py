"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/).

Headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``: space-separated
``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{raw body}")>``. Several secrets may be configured (for
rotation) and several signatures sent: any secret matching any ``v1`` signature is enough. RentVine's own
scheme is not public, so the intake talks to the :class:`Verifier` protocol, not to this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "TOLERANCE_S",
    "SignatureError",
    "StandardWebhooksVerifier",
    "Verifier",
    "decode_secret",
    "new_secret",
    "sign",
    "signed_headers",
]

TOLERANCE_S: Final = 300
_PREFIX: Final = "whsec_"
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64."""
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class SignatureError(Exception):
    """The webhook's signature is missing, malformed, wrong, or its timestamp is out of tolerance."""


class Verifier(Protocol):
    """What the intake needs from a signature scheme."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Return if the request is authentic; raise :class:`SignatureError` otherwise."""


def _base64(text: str) -> bytes | None:
    """``text`` as standard base64 with or without its ``=`` padding; None when it is not base64."""
    if not _BASE64.fullmatch(text) or len(text.rstrip("=")) % 4 == 1:
        return None
    try:
        return base64.b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_secret(secret: str) -> bytes:
    """The key bytes of a secret, read as the Standard Webhooks libraries read it, where they agree.

    ``whsec_<base64>`` and bare ``<base64>`` (standard alphabet, ``=`` padding optional) are the base64
    decoded, as the reference library (``standardwebhooks``) and svix read them. Any other text, which
    cannot be base64 (a character outside ``A-Z a-z 0-9 + / =``, or a length no base64 has), is the key as
    UTF-8 bytes: the reference library would silently drop those characters and sign with another key, so
    such a secret works only with senders that use its raw bytes.

    Raises:
        ValueError: a ``whsec_`` secret that is not base64 after the prefix, or a secret with no key bytes.
    """
    secret = secret.strip()
    body = secret.removeprefix(_PREFIX)
    key = _base64(body)
    if key is None and secret.startswith(_PREFIX):
        msg = "WEBHOOK_SECRET: after whsec_, a secret must be base64 (A-Z a-z 0-9 + /, = padding optional)"
        raise ValueError(msg)
    key = secret.encode() if key is None else key
    if not key:
        msg = "WEBHOOK_SECRET: a secret must have at least one byte of key"
        raise ValueError(msg)
    return key


def sign(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a message."""
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secret: str, body: bytes, *, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Headers that sign ``body`` with ``secret`` (for senders: the CLI, the sandbox, tests)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(decode_secret(secret), msg_id, timestamp, body),
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class StandardWebhooksVerifier:
    """Verifies Standard Webhooks signatures against one or more secrets, in constant time.

    Args:
        secrets: the configured secrets (``whsec_...`` or raw text); any one may match.
        tolerance_s: how far the timestamp may be from now, either way.
    """

    secrets: Sequence[str]
    tolerance_s: int = TOLERANCE_S

    def __post_init__(self) -> None:
        if not self.secrets:
            msg = "at least one webhook secret is needed"
            raise ValueError(msg)
        object.__setattr__(self, "_keys", tuple(decode_secret(s) for s in self.secrets))

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Check the signature headers against the raw body.

        Raises:
            SignatureError: with a reason safe to show the sender (no secret, no expected signature).
        """
        msg_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not stamp or not signatures:
            msg = "missing webhook-id, webhook-timestamp or webhook-signature header"
            raise SignatureError(msg)
        try:
            timestamp = int(stamp)
        except ValueError:
            msg = "webhook-timestamp is not unix seconds"
            raise SignatureError(msg) from None
        current = time.time() if now is None else now
        if abs(current - timestamp) > self.tolerance_s:
            msg = f"webhook-timestamp is more than {self.tolerance_s} s from now"
            raise SignatureError(msg)
        offered = [part.encode() for part in signatures.split() if part.startswith("v1,")]
        if not offered:
            msg = "no v1 signature in webhook-signature"
            raise SignatureError(msg)
        keys: tuple[bytes, ...] = object.__getattribute__(self, "_keys")
        matched = False
        for key in keys:
            expected = sign(key, msg_id, stamp, body).encode()
            for candidate in offered:
                # Compare every pair, so timing says nothing about which secret or signature matched.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            msg = "signature does not match"
            raise SignatureError(msg)
