"""Published message contracts: JSON Schema files generated from the wire models, and the AsyncAPI document.

`python -m consumer.contracts --write` regenerates `consumer/schemas/*.json`; a unit test fails when the
committed files and the models drift apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumer.dead_letters import FailureReason
from consumer.messages import SCHEMA_VERSION, DeadLetterHeaders, GenrePrediction, OverviewMessage

CONTRACTS_DIR = Path(__file__).resolve().parent / "schemas"
ID_BASE = "https://genre-stream.example/schemas"


def dead_letter_headers_schema() -> dict[str, Any]:
    """Dead letters keep the original bytes as value; their contract is the header set."""
    text = {"type": "string"}
    properties: dict[str, Any] = {name: dict(text) for name in DeadLetterHeaders.ALL + DeadLetterHeaders.OPTIONAL}
    for name in (DeadLetterHeaders.VALUE_TRUNCATED, DeadLetterHeaders.KEY_TRUNCATED):
        properties[name] = {"type": "string", "const": "true"}
    for name in (DeadLetterHeaders.VALUE_ORIGINAL_BYTES, DeadLetterHeaders.KEY_ORIGINAL_BYTES):
        properties[name] = {"type": "string", "pattern": "^[0-9]+$"}
    for name in (DeadLetterHeaders.VALUE_SHA256, DeadLetterHeaders.KEY_SHA256):
        properties[name] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    properties[DeadLetterHeaders.REASON] = {"type": "string", "enum": [r.value for r in FailureReason]}
    properties[DeadLetterHeaders.SOURCE_PARTITION] = {"type": "string", "pattern": "^[0-9]+$"}
    properties[DeadLetterHeaders.SOURCE_OFFSET] = {"type": "string", "pattern": "^[0-9]+$"}
    return {
        "title": "DeadLetterHeaders",
        "description": "Headers of a dead-letter record (UTF-8 values). Key and value are the original "
        "bytes, cut to fit the topic's message size limit when too long (then the dlq.value.* / dlq.key.* "
        "headers give the original size and SHA-256).",
        "type": "object",
        "properties": properties,
        "required": list(DeadLetterHeaders.ALL),
        "additionalProperties": True,
    }


def schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema, for every message the service reads or writes."""
    out = {
        "overview.input.schema.json": OverviewMessage.model_json_schema(mode="validation"),
        "genres.output.schema.json": GenrePrediction.model_json_schema(mode="serialization"),
        "dead-letter.headers.schema.json": dead_letter_headers_schema(),
    }
    for name, schema in out.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{ID_BASE}/v{SCHEMA_VERSION}/{name}"
    return out


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0 description of the topics, keys, headers and messages."""
    ref = {name: {"$ref": f"./{name}"} for name in schemas()}
    key = {"type": ["string", "null"], "description": "movie id as UTF-8; output key = input key"}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "genre-stream",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Movie overviews in, genre predictions out; bad input to a dead-letter topic. "
            "Readers of genres and the DLQ use isolation.level=read_committed (exactly-once mode).",
        },
        "channels": {
            "overviews": {
                "address": "overviews",
                "messages": {"overview": {"$ref": "#/components/messages/overview"}},
            },
            "genres": {"address": "genres", "messages": {"prediction": {"$ref": "#/components/messages/prediction"}}},
            "deadLetters": {
                "address": "overviews.dlq",
                "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
            },
        },
        "operations": {
            "consumeOverviews": {"action": "receive", "channel": {"$ref": "#/channels/overviews"}},
            "publishPredictions": {"action": "send", "channel": {"$ref": "#/channels/genres"}},
            "publishDeadLetters": {"action": "send", "channel": {"$ref": "#/channels/deadLetters"}},
        },
        "components": {
            "messages": {
                "overview": {
                    "contentType": "application/json",
                    "payload": ref["overview.input.schema.json"],
                    "bindings": {"kafka": {"key": key}},
                },
                "prediction": {
                    "contentType": "application/json",
                    "payload": ref["genres.output.schema.json"],
                    "bindings": {"kafka": {"key": key}},
                },
                "deadLetter": {
                    "contentType": "application/octet-stream",
                    "headers": ref["dead-letter.headers.schema.json"],
                    "payload": {"description": "the original value bytes, untouched (empty for a tombstone)"},
                    "bindings": {"kafka": {"key": {"description": "the original key bytes"}}},
                },
            }
        },
    }


def rendered() -> dict[str, str]:
    files = {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in schemas().items()}
    files["asyncapi.json"] = json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.contracts", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the committed contract files")
    args = parser.parse_args(argv)
    stale = [
        name
        for name, text in rendered().items()
        if not (CONTRACTS_DIR / name).is_file() or (CONTRACTS_DIR / name).read_text() != text
    ]
    if args.write:
        CONTRACTS_DIR.mkdir(exist_ok=True)
        for name, text in rendered().items():
            (CONTRACTS_DIR / name).write_text(text)
        print(f"wrote {len(rendered())} files to {CONTRACTS_DIR}")
        return 0
    if stale:
        print(f"contracts out of date: {', '.join(stale)} (run python -m consumer.contracts --write)", file=sys.stderr)
        return 1
    print("contracts up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
