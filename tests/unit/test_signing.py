"""The webhook contract against libraries no one here wrote: the Standard Webhooks reference library
(``standardwebhooks``) and svix's signer. For every secret format they accept: what they sign, the intake's
verifier accepts; what tracehook signs, their ``verify`` accepts; rotation and several signatures too."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix.webhooks

from tracing.settings import SettingsError
from workflows.settings import load_app_settings
from workflows.signing import SignatureError, StandardWebhooksVerifier, decode_secret, signed_headers

KEY = bytes(range(32))  # 32 bytes: base64 with one "=" of padding
OTHER_KEY = bytes(range(100, 132))
THIRD_KEY = bytes(range(200, 232))
BODY = json.dumps({"id": "evt_1", "type": "lease.renewed", "data": {"lease_id": "lease_1"}}).encode()


def formats(key: bytes) -> dict[str, str]:
    """One secret for ``key`` in each format the reference library accepts."""
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    return {
        "whsec_padded": f"whsec_{padded}",
        "whsec_unpadded": f"whsec_{padded.rstrip('=')}",
        "bare_padded": padded,
        "bare_unpadded": padded.rstrip("="),
    }


FORMATS = formats(KEY)
Signer = type[standardwebhooks.Webhook] | type[svix.webhooks.Webhook]
SIGNERS: dict[str, Signer] = {"standardwebhooks": standardwebhooks.Webhook, "svix": svix.webhooks.Webhook}


def their_headers(signer: Signer, secret: str, msg_id: str = "msg_1", *, extra: str = "") -> dict[str, str]:
    """Headers as a sender using ``signer`` makes them (``extra``: more signatures after its own)."""
    now = datetime.now(tz=UTC)
    signature = signer(secret).sign(msg_id, now, BODY.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"{signature} {extra}".strip(),
    }


class TestTheirSignaturesAccepted:
    """A webhook signed by the reference library or svix, with a secret in any of their formats, passes the
    intake's verifier configured with the same secret string."""

    @pytest.mark.parametrize("signer", list(SIGNERS))
    @pytest.mark.parametrize("name", list(FORMATS))
    def test_each_format(self, signer: str, name: str) -> None:
        """Same secret string on both sides: accepted."""
        secret = FORMATS[name]
        StandardWebhooksVerifier([secret]).verify(their_headers(SIGNERS[signer], secret), BODY)

    @pytest.mark.parametrize("name", list(FORMATS))
    def test_same_key_whatever_the_format(self, name: str) -> None:
        """Every format of one key is that key, as the reference library reads it."""
        assert KEY == decode_secret(FORMATS[name])

    @pytest.mark.parametrize("signer", list(SIGNERS))
    def test_wrong_secret_refused(self, signer: str) -> None:
        """Signed with another key: refused."""
        headers = their_headers(SIGNERS[signer], formats(OTHER_KEY)["bare_unpadded"])
        with pytest.raises(SignatureError):
            StandardWebhooksVerifier([FORMATS["bare_unpadded"]]).verify(headers, BODY)


class TestOurSignaturesPassTheirVerify:
    """What ``tracehook send`` and the sandbox sign passes the reference library's and svix's verify."""

    @pytest.mark.parametrize("signer", list(SIGNERS))
    @pytest.mark.parametrize("name", list(FORMATS))
    def test_each_format(self, signer: str, name: str) -> None:
        """signed_headers with each format verifies with their Webhook(secret)."""
        secret = FORMATS[name]
        headers = signed_headers(secret, BODY)
        SIGNERS[signer](secret).verify(BODY, headers)

    @pytest.mark.parametrize("signer", list(SIGNERS))
    def test_their_verify_refuses_another_key(self, signer: str) -> None:
        """The check above can fail: their verify refuses our signature under another key."""
        headers = signed_headers(FORMATS["whsec_padded"], BODY)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            SIGNERS[signer](formats(OTHER_KEY)["whsec_padded"]).verify(BODY, headers)


class TestRotationAndSeveralSignatures:
    """Several secrets on our side, several signatures on theirs: any secret matching any ``v1`` is enough."""

    @pytest.mark.parametrize("signer", list(SIGNERS))
    def test_old_and_new_secret(self, signer: str) -> None:
        """Configured with the old and the new secret (in different formats), both senders are accepted,
        a third is not."""
        old, new = formats(OTHER_KEY)["whsec_unpadded"], FORMATS["bare_padded"]
        verifier = StandardWebhooksVerifier([old, new])
        for secret in (old, new):
            verifier.verify(their_headers(SIGNERS[signer], secret), BODY)
        with pytest.raises(SignatureError):
            verifier.verify(their_headers(SIGNERS[signer], formats(THIRD_KEY)["whsec_padded"]), BODY)

    @pytest.mark.parametrize("signer", list(SIGNERS))
    def test_sender_signs_with_two_secrets(self, signer: str) -> None:
        """A header with the old key's and the new key's signatures passes a verifier that knows only one,
        and so does ours, in their verify."""
        old, new = formats(OTHER_KEY)["whsec_padded"], FORMATS["bare_unpadded"]
        theirs = their_headers(SIGNERS[signer], old)
        ours = signed_headers(new, BODY, msg_id="msg_1", timestamp=int(theirs["webhook-timestamp"]))
        both = {**theirs, "webhook-signature": f"{theirs['webhook-signature']} {ours['webhook-signature']}"}
        StandardWebhooksVerifier([new]).verify(both, BODY)
        StandardWebhooksVerifier([old]).verify(both, BODY)
        SIGNERS[signer](new).verify(BODY, both)
        SIGNERS[signer](old).verify(BODY, both)
        with pytest.raises(SignatureError):
            StandardWebhooksVerifier([formats(THIRD_KEY)["bare_padded"]]).verify(both, BODY)


class TestSecretFormats:
    """Which strings are secrets, and what the settings loader makes of them."""

    @pytest.mark.parametrize("name", list(FORMATS))
    def test_settings_accept_every_format(self, name: str) -> None:
        """WEBHOOK_SECRET in each format (and two of them, for rotation) loads; the intake starts."""
        settings = load_app_settings({"WEBHOOK_SECRET": f"{FORMATS[name]} {formats(OTHER_KEY)[name]}"})
        assert (FORMATS[name], formats(OTHER_KEY)[name]) == settings.webhook_secrets

    @pytest.mark.parametrize("secret", ["not-base64!", "a.b", "abcde", "s"])
    def test_raw_text_where_it_cannot_be_base64(self, secret: str) -> None:
        """A secret that cannot be base64 (a character outside it, or a length no base64 has) is its own
        UTF-8 bytes, and signing and verifying agree on it."""
        assert secret.encode() == decode_secret(secret)
        StandardWebhooksVerifier([secret]).verify(signed_headers(secret, BODY), BODY)

    @pytest.mark.parametrize("secret", ["whsec_not-base64", "whsec_abcde", "whsec_", "whsec_a=b"])
    def test_bad_whsec_stops_start_up(self, secret: str) -> None:
        """A whsec_ secret that is not base64 after the prefix fails at configuration, naming the variable."""
        with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
            load_app_settings({"WEBHOOK_SECRET": secret})

    def test_stale_timestamp_refused_as_the_reference_does(self) -> None:
        """A signature 10 minutes old is refused by both: the tolerance is the reference library's 5 min."""
        secret = FORMATS["whsec_padded"]
        headers = signed_headers(secret, BODY, timestamp=int(time.time()) - 600)
        with pytest.raises(SignatureError):
            StandardWebhooksVerifier([secret]).verify(headers, BODY)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(BODY, headers)
