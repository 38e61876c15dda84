"""Scrubbing of secrets and personal data, shared by spans, span events and log lines.

Two rules, applied the same way everywhere:

* a value whose *key* names a secret (password, token, api_key, authorization, ssn, card_number, ...) is
  replaced by ``"[REDACTED]"``;
* inside any string, Luhn-valid card numbers (13-19 digits, single spaces or dashes allowed) and US SSNs
  are masked to their last four digits, but only where the run stands alone (no letter, digit or ``_``
  on either side), so identifiers and longer numbers are left alone.

Identifier fields (``id``, ``*_id``, ``trace_id``, ``span_id``, ...) are never touched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "REDACTED",
    "card_numbers_in",
    "is_identifier_key",
    "is_sensitive_key",
    "luhn_valid",
    "may_need_scrubbing",
    "scrub_mapping",
    "scrub_text",
    "scrub_value",
]

REDACTED: Final = "[REDACTED]"

_SENSITIVE = re.compile(
    r"(?:^|[._\-])(?:password|passwd|pwd|passphrase|secret|client_secret|token|access_token|refresh_token"
    r"|api_?key|apikey|authorization|auth|cookie|set_cookie|session_?id|private_?key|signature"
    r"|ssn|social_security(?:_number)?|card_?number|cardnumber|credit_card|cvv|cvc|card_?cvv|pin"
    r"|account_?number|routing_?number)(?:$|[._\-])",
    re.IGNORECASE,
)
# A run of digits joined by single spaces or dashes that stands alone; card numbers are looked for
# inside it group by group (see _mask_cards).
_DIGIT_RUN = re.compile(r"(?<!\w)\d+(?:[ -]\d+)*(?!\w)")
_SSN = re.compile(r"(?<!\w)(\d{3})([ -])(\d{2})\2(\d{4})(?!\w)")
_DIGIT_GROUP = re.compile(r"\d+")
_MIN_CARD, _MAX_CARD = 13, 19
# Nine digits, single spaces or dashes allowed between them: the least an SSN or a card number takes.
# Text without such a run has nothing to mask.
_NINE_DIGITS = re.compile(r"(?:\d[ -]?){8}\d")  # written so, it backtracks less
_SMALLEST_CARD = 10 ** (_MIN_CARD - 1)


_PLAIN, _IDENTIFIER, _SECRET = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def _key_kind(key: str) -> int:
    # Keys repeat endlessly (attribute names, log fields): classify each once.
    low = key.lower().replace("-", "_").replace(" ", "_")
    if low == "id" or low.endswith(("_id", ".id")) or low in ("trace_id", "span_id"):
        return _IDENTIFIER
    if _SENSITIVE.search(low) is not None:
        return _SECRET
    return _PLAIN


def is_identifier_key(key: str) -> bool:
    """True for keys that hold identifiers, which scrubbing never changes."""
    return _key_kind(key) == _IDENTIFIER


def is_sensitive_key(key: str) -> bool:
    """True when the key names a secret or personal datum whose value must never be exported."""
    return _key_kind(key) == _SECRET


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits (the check every card number passes)."""
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(char)] for char in digits[-2::-2])
    return total % 10 == 0


def _mask(text: str) -> str:
    """Mask every digit but the last four, keeping separators so the shape stays readable."""
    keep = 4
    out: list[str] = []
    for char in reversed(text):
        if char.isdigit():
            out.append(char if keep > 0 else "*")
            keep -= 1
        else:
            out.append(char)
    return "".join(reversed(out))


def _card_shaped(sizes: Sequence[int]) -> bool:
    """Card numbers are written whole, in groups of four (the last may be shorter), or 4-6-5 / 4-6-4.

    Anything else (a phone number next to a date, say) is not taken for a card even if its digits
    happen to pass the Luhn check.
    """
    if len(sizes) == 1:
        return True
    if sizes[0] == 4 and sizes[1] == 6 and len(sizes) == 3:
        return sizes[2] in (4, 5)
    return all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4


_SEPARATORS = str.maketrans("", "", " -")


def _mask_cards(run: str) -> str:
    whole = run.translate(_SEPARATORS)
    if len(whole) < _MIN_CARD:
        return run
    # Fast path: the whole run is one card number (the common case).
    if (
        len(whole) <= _MAX_CARD
        and _card_shaped([len(g) for g in _DIGIT_GROUP.findall(run)])
        and luhn_valid(whole)
    ):
        return _mask(run)
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
    pieces: list[str] = []
    cursor = 0
    i = 0
    while i < len(groups):
        found = -1
        digits = 0
        for j in range(i, len(groups)):
            digits += groups[j][1] - groups[j][0]
            if digits > _MAX_CARD:
                break
            if digits >= _MIN_CARD and _card_shaped([end - start for start, end in groups[i : j + 1]]):
                candidate = run[groups[i][0] : groups[j][1]]
                if luhn_valid(candidate.translate(_SEPARATORS)):
                    found = j
        if found < 0:
            i += 1
            continue
        start, end = groups[i][0], groups[found][1]
        pieces.append(run[cursor:start])
        pieces.append(_mask(run[start:end]))
        cursor = end
        i = found + 1
    if not pieces:
        return run
    pieces.append(run[cursor:])
    return "".join(pieces)


def scrub_text(text: str) -> str:
    """Mask card numbers and SSNs inside ``text`` to their last four digits."""
    if len(text) < 9:
        return text
    if _DIGIT_RUN.search(text) is None:
        return text
    text = _DIGIT_RUN.sub(lambda m: _mask_cards(m.group()), text)
    if _SSN.search(text) is None:
        return text
    return _SSN.sub(lambda m: f"***{m.group(2)}**{m.group(2)}{m.group(4)}", text)


def card_numbers_in(value: Any) -> list[str]:
    """The card numbers :func:`scrub_text` and :func:`scrub_value` would mask in ``value``, masked.

    A string gives each run of digits holding a card; an integer that is a card gives itself; anything
    else gives nothing (walk containers yourself, keys and all, to apply the key rules).
    """
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        digits = str(abs(value))
        return [_mask(str(value))] if _MIN_CARD <= len(digits) <= _MAX_CARD and luhn_valid(digits) else []
    if not isinstance(value, str) or len(value) < _MIN_CARD:
        return []
    found: list[str] = []
    for match in _DIGIT_RUN.finditer(value):
        masked = _mask_cards(match.group())
        if masked != match.group():
            found.append(masked)
    return found


def scrub_value(key: str, value: Any) -> Any:
    """Scrub one keyed value: redact by key, mask inside strings, recurse into containers.

    Integers that are Luhn-valid card numbers become masked strings. Identifier keys pass unchanged.
    """
    kind = _key_kind(key)
    if kind == _IDENTIFIER:
        return value
    if kind == _SECRET:
        return REDACTED
    return _scrub_unkeyed(value)


def _scrub_unkeyed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        digits = str(abs(value))
        if _MIN_CARD <= len(digits) <= _MAX_CARD and luhn_valid(digits):
            return _mask(str(value))
        return value
    if isinstance(value, Mapping):
        return scrub_mapping(value)
    if isinstance(value, tuple):
        return tuple(_scrub_unkeyed(item) for item in value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_scrub_unkeyed(item) for item in value]
    return value


def may_need_scrubbing(values: Mapping[str, Any]) -> bool:
    """A quick check: False when :func:`scrub_value` would leave every value of ``values`` as it is.

    True when some value might change; it errs that way for anything it does not check exactly (nested
    containers, subclasses of ``str`` or ``int``), so False can be trusted and the full scrub skipped.
    """
    # Inlined: it runs for every span a processor of the user's own receives, on the thread ending it.
    for key, value in values.items():
        kind = _key_kind(key)
        if kind == _SECRET:
            return True
        if kind == _IDENTIFIER:
            continue
        cls = type(value)
        if cls is str:
            if len(value) >= 9 and _NINE_DIGITS.search(value) is not None:
                return True
        elif cls is int:
            if not -_SMALLEST_CARD < value < _SMALLEST_CARD:
                return True
        elif not (cls is float or cls is bool or value is None) and _value_may_change(value):
            return True
    return False


def _value_may_change(value: Any) -> bool:
    cls = type(value)
    if cls is str:
        return len(value) >= 9 and _NINE_DIGITS.search(value) is not None
    if cls is bool or cls is float or value is None:
        return False
    if cls is int:
        return not -_SMALLEST_CARD < value < _SMALLEST_CARD
    if cls is tuple or cls is list:
        return any(_value_may_change(item) for item in value)
    return True


def scrub_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a scrubbed copy of a mapping (keys kept, values scrubbed with :func:`scrub_value`)."""
    return {key: scrub_value(str(key), value) for key, value in values.items()}
