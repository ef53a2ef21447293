"""`genre-produce`: send overviews, tail predictions, audit delivery, show or replay dead letters, create topics."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from confluent_kafka import KafkaException
from pydantic import ValidationError

from consumer import installed_version
from consumer.settings import InvalidSettingsError, KafkaSettings
from producer_tools import clients, dead_letters, inputs, properties
from producer_tools.audit import audit
from producer_tools.errors import ConfigError, ToolError
from producer_tools.send import Record, encode, send
from producer_tools.tail import format_prediction, read_predictions
from producer_tools.topics import create_topics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre-produce",
        description="Operator tools for the genre classifier. Kafka connection from KAFKA_* variables "
        "(KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, ...), a librdkafka properties file (-F, "
        "overrides them) and -b (overrides both). Options before the command may also follow it.",
        epilog="Exit status: 0 done, 1 failed (one line on stderr: Kafka unreachable, topic missing, "
        "records not delivered, audit incomplete), 2 bad usage or configuration, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    _connection_options(parser, default=None)
    # Accepted after the subcommand too (`genre-produce tail -b host:9092`), as kcat users type it.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "send",
        parents=[common],
        help="send overviews to the input topic",
        description="Send overviews from arguments, stdin ('-' or piped), or a CSV/JSONL file.",
        epilog="Examples:\n  genre-produce send 'A boy wizard goes to school.'\n"
        "  genre-produce send --file ../shared/data/movies_overviews.csv --limit 100 --rate 20\n"
        '  echo \'{"id": "7", "overview": "Two cops chase a killer."}\' | genre-produce send -',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("texts", nargs="*", help="overview texts; '-' reads stdin (one text or JSON object per line)")
    p.add_argument("--file", type=Path, help=".csv (overview column, optional id/title) or .jsonl")
    p.add_argument("--topic", default=os.environ.get("GENRE_INPUT_TOPIC", "overviews"))
    p.add_argument("--limit", type=int, help="send at most N messages")
    p.add_argument("--rate", type=float, help="messages per second at most")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--raw", action="store_true", help="send each stdin line's bytes unchanged (bad-input tests)")

    p = sub.add_parser("tail", parents=[common], help="print predictions from the output topic")
    p.add_argument("--topic", default=os.environ.get("GENRE_OUTPUT_TOPIC", "genres"))
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest offset, not the end")
    p.add_argument("--max", type=int, dest="max_messages", help="stop after N predictions")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without a new prediction")
    p.add_argument("--json", action="store_true", help="print each prediction as JSON")

    p = sub.add_parser(
        "audit",
        parents=[common],
        help="reconcile inputs with outputs and dead letters",
        description="Read every committed record of the topics (read_committed) and report inputs, outputs, "
        "dead letters, missing and duplicated input offsets. Exit 1 when anything is missing.",
    )
    p.add_argument("--input-topic", default="overviews")
    p.add_argument("--output-topic", default="genres")
    p.add_argument("--dlq-topic", help="dead-letter topic to count as handled (default: none)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to read each topic to its end")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    dlq_topic = os.environ.get("GENRE_DLQ_TOPIC") or f"{os.environ.get('GENRE_INPUT_TOPIC', 'overviews')}.dlq"
    p = sub.add_parser(
        "dlq",
        parents=[common],
        help="look at dead letters, or replay them once their cause is fixed",
        description="Read the dead-letter topic from the beginning (read_committed). `show` prints each dead "
        "letter's source, reason, error and original bytes; `replay` re-sends the original key and value "
        "unchanged to the input topic (header dlq.replayed.from names the dead letter).",
    )
    dlq = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for action, text in (("show", "print dead letters"), ("replay", "re-send dead letters' original records")):
        a = dlq.add_parser(action, parents=[common], help=text)
        a.add_argument("--topic", default=dlq_topic, help=f"dead-letter topic (default {dlq_topic})")
        a.add_argument("--reason", action="append", help="only this reason (repeatable), e.g. invalid_json")
        a.add_argument("--max", type=int, dest="max_messages", help="read at most N dead letters")
        a.add_argument("--timeout", type=float, default=30.0, help="seconds to reach the topic's end")
        if action == "show":
            a.add_argument("--json", action="store_true", help="one JSON object per dead letter")
        else:
            a.add_argument("--to", default=os.environ.get("GENRE_INPUT_TOPIC", "overviews"), help="input topic")
            a.add_argument("--all", action="store_true", help="replay every reason (else --reason is required)")
            a.add_argument("--dry-run", action="store_true", help="list what would be replayed, send nothing")

    p = sub.add_parser(
        "create-topics", parents=[common], help="create the input, output and dead-letter topics if missing"
    )
    p.add_argument(
        "topics",
        nargs="*",
        help="default: $GENRE_INPUT_TOPIC, $GENRE_OUTPUT_TOPIC, <input>.dlq, and <output>.shadow when "
        "$GENRE_MODEL_SHADOW_URI is set (the consumer refuses to start while a topic it writes is missing)",
    )
    p.add_argument("--shadow", action="store_true", help="also create the shadow model's topic")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--replication-factor", type=int, default=-1, help="-1: the broker's default")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds for the cluster to create them")
    return parser


def _connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-b", "--bootstrap-servers", default=default, help="host:port[,...]; overrides KAFKA_BOOTSTRAP_SERVERS and -F"
    )
    parser.add_argument(
        "-F",
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help="librdkafka properties (key=value lines, # comments) for every client, e.g. security.protocol, "
        "sasl.*, ssl.*; debug=broker shows librdkafka's logs",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0 if default is None else default,
        metavar="SECONDS",
        help="give up when no broker answers (or a topic is missing) within this long (default 10)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _records(args: argparse.Namespace, stdin: BinaryIO) -> tuple[Iterator[Record], int | None]:
    """The records to send, read lazily (stdin is sent line by line as it arrives), and their count
    when known. Argument mistakes and a missing file are reported here, before Kafka is contacted."""
    if args.file and args.texts:
        raise ToolError("give texts or --file, not both")
    from_stdin = args.texts == ["-"] or (not args.texts and not args.file and not sys.stdin.isatty())
    if args.raw and not from_stdin:
        raise ToolError("--raw sends stdin lines; give '-' or pipe input")
    source: Iterator[Record]
    total = args.limit
    if args.raw:
        source = ((None, line) for line in inputs.raw_lines(stdin))
    elif args.file:
        source = map(encode, inputs.from_file(args.file))
    elif from_stdin:
        source = map(encode, inputs.from_lines(stdin))
    elif args.texts:
        source = map(encode, inputs.from_texts(args.texts))
        total = len(args.texts) if args.limit is None else min(len(args.texts), args.limit)
    else:
        raise ToolError("nothing to send: give texts, '-' for stdin, or --file")
    return itertools.islice(source, args.limit), total


def _connect_bound(args: argparse.Namespace) -> float:
    # A command's own --timeout bounds the whole command, so it bounds connecting too.
    bound: float = args.connect_timeout
    own: float | None = getattr(args, "timeout", None)
    return min(bound, own) if own else bound


def _send(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    records, total = _records(args, sys.stdin.buffer)
    clients.check(kafka, _connect_bound(args), [args.topic])
    report = send(
        clients.producer(kafka),
        args.topic,
        records,
        rate=args.rate,
        total=total,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(f"delivered {report.delivered} of {report.attempted} to {args.topic}")
    if report.failed:
        print(f"genre-produce: {report.failed} not delivered: {report.first_error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _tail(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    # Checked once: when the cluster answers, tail follows through later outages as a consumer does.
    clients.check(kafka, _connect_bound(args), [args.topic])
    reader = clients.reader(kafka, from_beginning=args.from_beginning)
    for p in read_predictions(reader, args.topic, max_messages=args.max_messages, idle_timeout_s=args.timeout):
        print(format_prediction(p, args.json), flush=True)
    return EXIT_OK


def _audit(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    topics = [args.input_topic, args.output_topic, *([args.dlq_topic] if args.dlq_topic else [])]
    clients.check(kafka, _connect_bound(args), topics)
    report = audit(
        clients.reader(kafka, from_beginning=True), args.input_topic, args.output_topic, args.dlq_topic, args.timeout
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(
            f"inputs {report.inputs}  outputs {report.outputs}  dead letters {report.dead_letters}  "
            f"missing {report.missing}  duplicated {report.duplicated}  complete {report.complete}"
        )
    return EXIT_FAILED if report.missing or not report.complete else EXIT_OK


def _create_topics(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    names = args.topics
    if not names:
        source = os.environ.get("GENRE_INPUT_TOPIC", "overviews")
        output = os.environ.get("GENRE_OUTPUT_TOPIC", "genres")
        names = [source, output, os.environ.get("GENRE_DLQ_TOPIC") or f"{source}.dlq"]
        if args.shadow or os.environ.get("GENRE_MODEL_SHADOW_URI"):
            names.append(os.environ.get("GENRE_SHADOW_TOPIC") or f"{output}.shadow")
    clients.check(kafka, _connect_bound(args))
    created = create_topics(clients.admin(kafka), names, args.partitions, args.replication_factor, args.timeout)
    print(f"created: {', '.join(created) or 'none'}; present: {', '.join(names)}")
    return EXIT_OK


def _dlq(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    replaying = args.dlq_command == "replay" and not args.dry_run
    if args.dlq_command == "replay" and not (args.reason or args.all):
        raise ToolError("dlq replay: name the --reason(s) whose cause is fixed, or give --all")
    clients.check(kafka, _connect_bound(args), [args.topic, *([args.to] if replaying else [])])
    letters = dead_letters.read_dead_letters(
        clients.reader(kafka, from_beginning=True), args.topic, max_messages=args.max_messages, timeout_s=args.timeout
    )
    chosen = (d for d in letters if not args.reason or d.reason in args.reason)
    if args.dlq_command == "show" or args.dry_run:
        shown = 0
        for letter in chosen:
            print(letter.to_json() if getattr(args, "json", False) else letter.describe(), flush=True)
            shown += 1
        print(f"{shown} dead letter(s) in {args.topic}", file=sys.stderr)
        return EXIT_OK
    report = dead_letters.replay(clients.producer(kafka), chosen, args.to)
    print(
        f"replayed {report.sent.delivered} to {args.to}; skipped {report.skipped_incomplete} cut to fit "
        f"(original bytes not in the topic)"
    )
    if report.sent.failed:
        print(f"genre-produce: {report.sent.failed} not delivered: {report.sent.first_error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _settings(args: argparse.Namespace, environ: Mapping[str, str], file: Mapping[str, str]) -> KafkaSettings:
    """KAFKA_* variables, then the -F file's properties over them, then -b over both."""
    env = dict(environ)
    extra = dict(file)
    from_file = extra.pop("bootstrap.servers", None)
    servers = args.bootstrap_servers or from_file
    if servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = servers
    try:
        kafka = KafkaSettings.from_env(env)
        return KafkaSettings.from_env(env, extra={**kafka.extra, **extra}) if extra else kafka
    except InvalidSettingsError as exc:
        raise ConfigError(str(exc)) from exc
    except ValidationError as exc:
        raise ConfigError(f"invalid Kafka settings: {exc.errors()[0]['msg']}") from exc


def _fail(message: object, secrets: list[str], code: int) -> int:
    # One line, whatever the cause said; a secret from the environment or -F never reaches stderr.
    line = " ".join(properties.redact(str(message), secrets).split())
    print(f"genre-produce: {line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"send": _send, "tail": _tail, "audit": _audit, "create-topics": _create_topics, "dlq": _dlq}
    secrets: list[str] = []
    try:
        file = properties.load(args.config, clients.refusal) if args.config else {}
        secrets = properties.secret_values(file)
        kafka = _settings(args, os.environ if environ is None else environ, file)
        secrets = properties.secret_values(kafka.client_config())
        return commands[args.command](kafka, args)
    except ConfigError as exc:
        return _fail(exc, secrets, EXIT_USAGE)
    except ToolError as exc:
        return _fail(exc, secrets, EXIT_FAILED)
    except KafkaException as exc:  # one no command anticipated: still one line, not a traceback
        return _fail(f"Kafka: {exc.args[0].str() if exc.args else exc}", secrets, EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
