"""`genre-produce`: send overviews, tail predictions, audit delivery, show or replay dead letters, create topics."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from consumer.settings import KafkaSettings
from producer_tools import clients, dead_letters, inputs
from producer_tools.audit import audit
from producer_tools.errors import ToolError
from producer_tools.send import Record, encode, send
from producer_tools.tail import format_prediction, read_predictions
from producer_tools.topics import create_topics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre-produce",
        description="Operator tools for the genre classifier. Kafka connection from KAFKA_* variables "
        "(KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, ...) or --bootstrap-servers.",
    )
    parser.add_argument("-b", "--bootstrap-servers", help="overrides KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # Accepted after the subcommand too (`genre-produce tail -b host:9092`), as kcat users type it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-b", "--bootstrap-servers", default=argparse.SUPPRESS, help="overrides KAFKA_BOOTSTRAP_SERVERS"
    )
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
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genre-stream")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _records(args: argparse.Namespace, stdin: BinaryIO) -> list[Record]:
    if args.file and args.texts:
        raise ToolError("give texts or --file, not both")
    from_stdin = args.texts == ["-"] or (not args.texts and not args.file and not sys.stdin.isatty())
    if args.raw and not from_stdin:
        raise ToolError("--raw sends stdin lines; give '-' or pipe input")
    source: Iterator[Record]
    if args.raw:
        source = ((None, line) for line in inputs.raw_lines(stdin))
    elif args.file:
        source = map(encode, inputs.from_file(args.file))
    elif from_stdin:
        source = map(encode, inputs.from_lines(stdin))
    elif args.texts:
        source = map(encode, inputs.from_texts(args.texts))
    else:
        raise ToolError("nothing to send: give texts, '-' for stdin, or --file")
    return list(itertools.islice(source, args.limit))


def _send(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    messages = _records(args, sys.stdin.buffer)
    report = send(
        clients.producer(kafka),
        args.topic,
        messages,
        rate=args.rate,
        total=len(messages),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(f"delivered {report.delivered} of {report.attempted} to {args.topic}")
    if report.failed:
        print(f"genre-produce: {report.failed} not delivered: {report.first_error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _tail(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    reader = clients.reader(kafka, from_beginning=args.from_beginning)
    for p in read_predictions(reader, args.topic, max_messages=args.max_messages, idle_timeout_s=args.timeout):
        print(format_prediction(p, args.json), flush=True)
    return EXIT_OK


def _audit(kafka: KafkaSettings, args: argparse.Namespace) -> int:
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
    created = create_topics(clients.admin(kafka), names, args.partitions, args.replication_factor)
    print(f"created: {', '.join(created) or 'none'}; present: {', '.join(names)}")
    return EXIT_OK


def _dlq(kafka: KafkaSettings, args: argparse.Namespace) -> int:
    if args.dlq_command == "replay" and not (args.reason or args.all):
        raise ToolError("dlq replay: name the --reason(s) whose cause is fixed, or give --all")
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    if args.bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap_servers
    try:
        kafka = KafkaSettings.from_env(env)
    except ValidationError as exc:
        print(f"genre-produce: invalid Kafka settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_USAGE
    commands = {"send": _send, "tail": _tail, "audit": _audit, "create-topics": _create_topics, "dlq": _dlq}
    try:
        return commands[args.command](kafka, args)
    except ToolError as exc:
        print(f"genre-produce: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
