"""`genre-produce -F client.properties`: the file parses as kcat reads it, malformed lines and options the
tool sets are refused by line number, the file applies anywhere in argv, and no secret reaches stderr."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from consumer.settings import GUARANTEE_OPTIONS, KafkaSettings
from producer_tools import clients
from producer_tools.cli import build_parser, main
from producer_tools.errors import ConfigError, InputFileError, KafkaToolError
from producer_tools.properties import load, parse, redact
from producer_tools.send import send

BLANKS = " \t\f"
# What `key=value` can carry: no line break in either, no `=` in a key, nothing a reader strips around them.
keys = st.text(st.characters(exclude_characters="=\r\n", exclude_categories=("Cs",)), min_size=1).filter(
    lambda k: k == k.strip(BLANKS) and k[0] not in "#!"
)
values = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",))).filter(
    lambda v: v == v.strip(BLANKS)
)


def render(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


@given(st.dictionaries(keys, values, max_size=20))
@example({"sasl.jaas.config": "a=b=c", "empty": "", "not#first": "x", "ssl.key.password": "p # not a comment"})
def test_any_properties_rendered_to_a_file_parse_back_equal(properties: dict[str, str]) -> None:
    assert parse(render(properties), "f") == properties


def test_comments_blanks_spaces_line_endings_and_repeats_read_as_kcat_reads_them() -> None:
    text = "# comment\r\n! also a comment\n\n   \n  bootstrap.servers = b:9092  \r\nsasl.jaas.config=x=y;\rclient.id=a\nclient.id=b"
    assert parse(text, "f") == {"bootstrap.servers": "b:9092", "sasl.jaas.config": "x=y;", "client.id": "b"}


@given(
    st.lists(st.tuples(keys, values), max_size=8),
    st.integers(0, 8),
    st.sampled_from(["sasl.password hunter2", "=hunter2", "  = hunter2", "hunter2", "sasl.password: hunter2"]),
)
def test_a_malformed_line_is_refused_with_its_number_and_never_its_text(
    good: list[tuple[str, str]], at: int, bad: str
) -> None:
    lines = [f"{k}={v}" for k, v in good]
    at = min(at, len(lines))
    lines.insert(at, bad)
    with pytest.raises(ConfigError) as info:
        parse("\n".join(lines), "client.properties")
    assert str(info.value).startswith(f"client.properties:{at + 1}: ")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("name", [*sorted(GUARANTEE_OPTIONS), *sorted(clients.TOOL_OPTIONS), "error_cb", "on_delivery"])
def test_options_the_tool_sets_itself_are_refused_by_line(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"client.id=x\n{name}=secret-value\n", "c.properties", clients.refusal)
    assert str(info.value).startswith(f"c.properties:2: {name}: ") and "secret-value" not in str(info.value)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    cases = {tmp_path / "missing": "cannot read", tmp_path: "cannot read"}
    undecodable = tmp_path / "latin1.properties"
    undecodable.write_bytes(b"a=b\nsasl.password=\xe9t\xe9\n")
    cases[undecodable] = ":2: not UTF-8"
    for path, why in cases.items():
        with pytest.raises(ConfigError) as info:
            load(path)
        assert str(info.value).startswith(str(path)) and why in str(info.value)
    bom = tmp_path / "bom.properties"
    bom.write_bytes("\ufeffbootstrap.servers=h:1\n".encode())
    assert load(bom) == {"bootstrap.servers": "h:1"}


@pytest.mark.parametrize(
    "argv",
    [
        ["-F", "c.properties", "tail"],
        ["tail", "-F", "c.properties"],
        ["--config", "c.properties", "audit"],
        ["audit", "--config=c.properties"],
        ["send", "-F", "c.properties", "x"],
        ["create-topics", "-F", "c.properties"],
        ["dlq", "-F", "c.properties", "show"],
        ["dlq", "show", "-F", "c.properties"],
        ["-F", "c.properties", "dlq", "replay", "--all"],
    ],
)
def test_config_file_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.config == Path("c.properties") and args.connect_timeout == 10.0


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[KafkaSettings]]:
    """Settings a command would connect with; the command stops there, before any network."""
    got: list[KafkaSettings] = []

    def check(kafka: KafkaSettings, timeout_s: float, topics: Any = ()) -> None:
        got.append(kafka)
        raise KafkaToolError("stopped before connecting")

    monkeypatch.setattr(clients, "check", check)
    yield got


def test_file_properties_override_the_environment_and_b_overrides_the_file(
    tmp_path: Path, seen: list[KafkaSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "c.properties"
    f.write_text("bootstrap.servers=file:9092\nsecurity.protocol=SSL\nfetch.max.bytes=1000\n")
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:9092", "KAFKA_EXTRA": '{"fetch.max.bytes": 5, "linger.ms": 7}'}
    assert main(["tail", "-F", str(f)], env) == 1
    assert main(["-b", "cli:9092", "tail", "-F", str(f)], env) == 1
    assert main(["tail"], env) == 1
    from_file, from_b, from_env = (k.client_config() for k in seen)
    assert from_file["bootstrap.servers"] == "file:9092" and from_file["security.protocol"] == "SSL"
    assert from_file["fetch.max.bytes"] == "1000" and from_file["linger.ms"] == 7
    assert from_b["bootstrap.servers"] == "cli:9092" and from_b["security.protocol"] == "SSL"
    assert from_env["bootstrap.servers"] == "env:9092" and from_env["fetch.max.bytes"] == 5
    assert capsys.readouterr().err.count("stopped before connecting") == 3


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("sasl.password S3cr3t-value\n", ":1: expected key=value"),
        ("group.id=S3cr3t-value\n", ":1: group.id: set by genre-produce"),
        ("no.such.option=S3cr3t-value\n", 'No such configuration property: "no.such.option"'),
        # librdkafka repeats an invalid value in its error; a value a secret's name holds is masked there
        (
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=S3cr3t-value\nssl.key.password=S3cr3t-value\n",
            "Unsupported SASL mechanism: ***",
        ),
        ("security.protocol=SSL\nssl.key.pem=S3cr3t-value\nssl.certificate.pem=S3cr3t-value\n", "ssl.certificate.pem"),
    ],
)
def test_no_secret_from_the_file_or_the_environment_reaches_stderr(
    text: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "c.properties"
    f.write_text(text)
    env = {"KAFKA_SASL_PASSWORD": "S3cr3t-value", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    # Each fails while reading the file or building the client, before any connection.
    assert main(["tail", "-F", str(f), "--connect-timeout", "0.5"], env) == 2
    err = capsys.readouterr().err
    assert err.startswith("genre-produce: ") and err.count("\n") == 1 and said in err, err
    assert "S3cr3t" not in err


def test_file_errors_exit_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.properties"
    f.write_text("a=b\n\nlinger.ms\n")
    assert main(["send", "x", "-F", str(f)], {}) == 2
    assert capsys.readouterr().err == f"genre-produce: {f}:3: expected key=value (or a # comment)\n"
    assert main(["send", "x", "-F", str(tmp_path / "nope")], {}) == 2
    assert "nope: cannot read: No such file or directory" in capsys.readouterr().err


def test_redact_masks_every_occurrence_longest_first() -> None:
    assert redact("pw abc and abcdef", ["abc", "abcdef"]) == "pw *** and ***"


class RecordingProducer:
    def __init__(self) -> None:
        self.produced: list[bytes] = []
        self.flushed = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append(kwargs["value"])
        kwargs["on_delivery"](None, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed += 1
        return 0


def test_send_produces_each_record_before_reading_the_next() -> None:
    producer = RecordingProducer()

    def lines() -> Iterator[tuple[bytes | None, bytes]]:
        for i in range(3):
            yield None, str(i).encode()
            assert len(producer.produced) == i + 1  # produced before the next line is asked for

    assert send(producer, "t", lines(), progress=False).delivered == 3


def test_a_bad_line_midway_flushes_what_came_before_and_says_so() -> None:
    from producer_tools import inputs
    from producer_tools.send import encode

    producer = RecordingProducer()
    stdin = io.BytesIO(b'{"overview": "one"}\ntwo\n{broken\nfour\n')
    with pytest.raises(InputFileError) as info:
        send(producer, "t", map(encode, inputs.from_lines(stdin)), progress=False)
    assert "stdin line 3" in str(info.value) and "2 of the 2 records before it delivered" in str(info.value)
    assert producer.flushed == 1 and len(producer.produced) == 2
