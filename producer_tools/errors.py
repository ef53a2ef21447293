"""Errors of the operator tools.

ToolError                 the CLI prints it in one line and exits 1
├── ConfigError           a properties file (-F) or Kafka client option cannot be used: exit 2
├── InputFileError        a file or stdin to send cannot be read
└── KafkaToolError        the cluster refused or timed out
    └── UnreachableError  no broker answered within the connect timeout
"""

from __future__ import annotations


class ToolError(Exception):
    """Root of the tools' errors; the CLI prints it in one line and exits 1."""


class ConfigError(ToolError):
    """The Kafka client configuration cannot be used (exit 2); the message never repeats a value."""


class InputFileError(ToolError):
    """Input to send cannot be read."""


class KafkaToolError(ToolError):
    """A Kafka operation failed."""


class UnreachableError(KafkaToolError):
    """No broker answered a metadata request in time."""
