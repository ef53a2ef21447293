"""Credentials out of whatever is logged or raised: a URI keeps its scheme, host and path, never a secret."""

from __future__ import annotations

import re

MASK = "***"

_WORD = re.compile(r"\S+")
# Parameters named like secrets, at the start of a word (`password=x` in a DSN) or after `?`, `&`, `;`.
# The name is bounded so a long word cannot make the lazy scan quadratic.
_SECRET_PARAM = re.compile(
    r"(?:^|[?&;])[^=&?#;\s]{0,64}?(?:token|passw|pwd|secret|key|sig|credential|auth|session)[^=&?#;\s]{0,64}="
    r"([^&#;\s]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it masked.

    `scheme://user:token@host` becomes `scheme://***@host`, and the values of parameters named like
    secrets (`?token=`, `&password=`, `X-Amz-Signature=`, `api_key=`) become `***`. Works on any
    text (a bare URI, an exception message quoting one, a log line), leaves text without
    credentials unchanged, and is idempotent.

    Both rules mark spans of the original word and every marked span is masked, so neither rule can
    hide a secret from the other (a password holding `&key=`, a query value holding `@`). The
    user-info span runs from `://` to the word's last `@`: a hand-typed password with a raw `/`,
    `?`, `#` or `@` is masked whole, at the price of masking a little more in odd cases
    (`http://h/p?mail=a@b` keeps only `b`).
    """
    if "@" not in text and "=" not in text:  # the common line: nothing that could hold a secret
        return text
    return _WORD.sub(_redact_word, text)


def _redact_word(match: re.Match[str]) -> str:
    word = match.group()
    spans = [m.span(1) for m in _SECRET_PARAM.finditer(word) if m.end(1) > m.start(1)]
    sep, at = word.find("://"), word.rfind("@")
    if sep != -1 and at > sep + 3:
        spans.append((sep + 3, at))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:  # overlapping or touching: one mask
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, done = [], 0
    for start, end in merged:
        out += [word[done:start], MASK]
        done = end
    return "".join(out) + word[done:]
