"""Schema Registry validation of framed input: a record must match the schema its producer registered.

Producers using Confluent's JSON serializer frame each value with the id of the schema they
registered (`consumer.decoding` strips the frame). With `GENRE_SCHEMA_REGISTRY_URL` set, the payload
is also checked against that schema, so a producer that drifts from what it declared is caught at
the door (dead letter `schema_violation`, naming the schema id), not downstream.

The registry is outside the record's control, so its outage must neither stop the group nor
dead-letter good input: a schema that cannot be fetched is skipped (logged, counted, retried after
`RETRY_S`), and the record is still validated by the service's own input model. Avro and Protobuf
schemas are not JSON's to check and are skipped the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

RETRY_S = 30.0
"""How long a schema that could not be fetched is skipped before the registry is asked again."""
MAX_SCHEMAS = 1024
"""Schemas kept in memory; ids are per registry, so this is far above what one topic sees."""


class RegisteredSchemas:
    """Fetches JSON schemas by id (once each) and validates payloads against them.

    Args:
        client: a `confluent_kafka.schema_registry.SchemaRegistryClient` (or anything with its
            `get_schema(schema_id)` returning an object with `schema_type` and `schema_str`).
        clock: monotonic seconds, injectable for tests.
        on_unavailable: called once per failed fetch (a metric).
    """

    def __init__(
        self,
        client: Any,
        clock: Callable[[], float] = time.monotonic,
        on_unavailable: Callable[[], object] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._on_unavailable = on_unavailable
        self._validators: dict[int, Any] = {}
        self._skipped_until: dict[int, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, basic_auth: str = "", **kwargs: Any) -> RegisteredSchemas:
        """A client for the registry at `url` (`basic_auth`: `user:password`, optional).

        Raises:
            ImportError: confluent-kafka's schema registry extra is not installed.
        """
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf = {"url": url, **({"basic.auth.user.info": basic_auth} if basic_auth else {})}
        return cls(SchemaRegistryClient(conf), **kwargs)

    def __call__(self, schema_id: int, payload: dict[str, Any]) -> str | None:
        """The first way `payload` violates schema `schema_id`, or None (valid, or not checkable now)."""
        validator = self._validator(schema_id)
        if validator is None:
            return None
        error = next(iter(validator.iter_errors(payload)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"does not match registered schema {schema_id} at {where}: {error.message[:300]}"

    def _validator(self, schema_id: int) -> Any:
        with self._lock:
            if schema_id in self._validators:
                return self._validators[schema_id]
            if self._skipped_until.get(schema_id, 0.0) > self._clock():
                return None
        try:
            schema = self._client.get_schema(schema_id)
            validator = _json_validator(schema)
        except Exception as exc:  # unreachable, unknown id, malformed schema: not the record's fault
            logger.warning("schema %d not checked for %.0f s: %s: %s", schema_id, RETRY_S, type(exc).__name__, exc)
            if self._on_unavailable is not None:
                self._on_unavailable()
            with self._lock:
                self._skipped_until[schema_id] = self._clock() + RETRY_S
            return None
        with self._lock:
            if len(self._validators) >= MAX_SCHEMAS:
                self._validators.pop(next(iter(self._validators)))
            self._validators[schema_id] = validator
        return validator


def _json_validator(schema: Any) -> Any:
    """A jsonschema validator for a registered JSON schema; None for Avro or Protobuf."""
    from jsonschema.validators import validator_for

    if (getattr(schema, "schema_type", None) or "JSON") != "JSON":
        return None
    document = json.loads(schema.schema_str)
    cls = validator_for(document)
    cls.check_schema(document)
    return cls(document)
