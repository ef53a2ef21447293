"""Errors of the operator tools.

ToolError
├── InputFileError   a file or stdin to send cannot be read
└── KafkaToolError   the cluster refused or timed out
"""

from __future__ import annotations


class ToolError(Exception):
    """Root of the tools' errors; the CLI prints it in one line and exits 1."""


class InputFileError(ToolError):
    """Input to send cannot be read."""


class KafkaToolError(ToolError):
    """A Kafka operation failed."""
