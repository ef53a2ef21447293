"""librdkafka properties files (`-F client.properties`), read as kcat and the Kafka console tools read them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from producer_tools.errors import ConfigError

Refusal = Callable[[str], str | None]
"""Given a property name, why it may not be set (None: it may)."""

_BLANKS = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SECRET_NAME = re.compile(r"password|secret|token|credential|jaas|key|\.pem$|oauthbearer\.config", re.IGNORECASE)


def _accept(name: str) -> str | None:
    return None


def parse(text: str, source: str, refuse: Refusal = _accept) -> dict[str, str]:
    """Properties from `key=value` lines; blank lines and lines starting with `#` or `!` are skipped.

    The first `=` separates key and value, so values may contain `=`; blanks around both are dropped;
    a repeated key's last value wins. Java's backslash escapes and continuation lines are not read
    (kcat does not read them either).

    Raises:
        ConfigError: a line that is not `key=value`, or a refused key, as `source:line: why`. The
            line's text is never repeated: it may hold a secret.
    """
    properties: dict[str, str] = {}
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        stripped = line.strip(_BLANKS)
        if not stripped or stripped[0] in "#!":
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip(_BLANKS)
        if not equals or not key:
            raise ConfigError(f"{source}:{number}: expected key=value (or a # comment)")
        reason = refuse(key)
        if reason is not None:
            raise ConfigError(f"{source}:{number}: {key}: {reason}")
        properties[key] = value.strip(_BLANKS)
    return properties


def load(path: Path, refuse: Refusal = _accept) -> dict[str, str]:
    """Reads a UTF-8 properties file; see `parse`.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or `parse` refuses a line.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8") from exc
    return parse(text, str(path), refuse)


def secret_values(config: Mapping[str, object]) -> list[str]:
    """The values of options whose names say they hold a secret (passwords, keys, tokens)."""
    return [str(v) for k, v in config.items() if _SECRET_NAME.search(k) and str(v)]


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
