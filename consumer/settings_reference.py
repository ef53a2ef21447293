"""docs/configuration.md, generated from the settings' fields (`python -m consumer.settings_reference --write`).

A unit test regenerates it and fails when the file and the code drift apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from consumer.settings import KafkaSettings, ModelSettings, ServiceSettings, _EnvSettings

NO_DEFAULT = "\N{EN DASH}"

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

HEADER = """# Configuration

`genre-consumer` reads environment variables only, once, at start-up. A value that is refused stops
it with exit code 2 and names the variable (never the value: it may be a secret). Generated from
`consumer/settings.py` by `python -m consumer.settings_reference --write`; a test keeps it current.

Exit codes of `genre-consumer`: 0 stopped by a signal, 1 persistent Kafka failure, 2 invalid
configuration, 3 the model cannot be loaded.
"""


def env_names(cls: type[_EnvSettings], name: str, info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices if isinstance(c, str) and c.isupper()]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def values_of(annotation: Any) -> str:
    """Allowed values of a Literal or enum annotation (others: the type's name)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " / ".join(f"`{m.value}`" for m in annotation)
    if args and len(args) == 1:
        return values_of(args[0])
    return ""


def bounds_of(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for key, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, key, None) is not None:
                parts.append(f"{sign} {getattr(m, key)}")
    return ", ".join(parts)


def default_of(info: FieldInfo) -> str:
    if info.default_factory is not None or info.default is PydanticUndefined:
        return NO_DEFAULT
    value = info.default
    if isinstance(value, Enum):
        value = value.value
    if value is None or value == "":
        return NO_DEFAULT
    if isinstance(value, Path) and value.is_relative_to(tempfile.gettempdir()):
        value = Path("$TMPDIR") / value.relative_to(tempfile.gettempdir())
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def table(cls: type[_EnvSettings]) -> list[str]:
    rows = ["| variable | default | values | meaning |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        env = " or ".join(f"`{e}`" for e in env_names(cls, name, info))
        allowed = " ; ".join(p for p in (values_of(info.annotation), bounds_of(info)) if p)
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| {env} | {default_of(info)} | {allowed} | {meaning} |")
    return rows


def render_help() -> str:
    """Every setting as plain text for `genre-consumer --help`: variable, default, meaning."""
    lines = []
    for cls in (KafkaSettings, ServiceSettings, ModelSettings):
        lines += ["", (cls.__doc__ or cls.__name__).removesuffix(".") + ":"]
        for name, info in cls.model_fields.items():
            env = " | ".join(env_names(cls, name, info))
            default = default_of(info).strip("`")
            allowed = " ; ".join(p for p in (values_of(info.annotation), bounds_of(info)) if p).replace("`", "")
            lines.append(f"  {env}={'' if default == NO_DEFAULT else default}")
            meaning = " ".join(p for p in (info.description or "", f"({allowed})" if allowed else "") if p)
            lines += textwrap.wrap(meaning, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def render() -> str:
    lines = [HEADER]
    for cls in (KafkaSettings, ServiceSettings, ModelSettings):
        title = (cls.__doc__ or cls.__name__).removesuffix(".")
        lines += [f"## {title}", "", *table(cls), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE.name} instead of checking it")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE.write_text(text, encoding="utf-8")
        return 0
    if REFERENCE.read_text(encoding="utf-8") != text:
        print(f"{REFERENCE} is out of date: python -m consumer.settings_reference --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
