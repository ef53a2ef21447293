from __future__ import annotations

import gc
import io
import json
import os
from pathlib import Path

import pytest

from consumer.__main__ import EXIT_CONFIG, OPENMP_SPIN_COUNT
from consumer.__main__ import main as consumer_main
from consumer.wiring import freeze_loaded_objects
from model.training.evaluate import build_parser as eval_parser
from model.training.train import build_parser as train_parser
from producer_tools import inputs
from producer_tools.cli import build_parser, main
from producer_tools.errors import InputFileError
from producer_tools.send import encode


def test_produce_help_teaches_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("send", "tail", "audit", "create-topics"):
        assert command in out


def test_unknown_command_and_bad_numbers_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["explode"], ["send", "--rate", "fast", "x"], ["tail", "--max", "ten"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_send_texts_and_file_together_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.csv"
    f.write_text("overview\nhello\n")
    assert main(["--bootstrap-servers", "127.0.0.1:1", "send", "--file", str(f), "text"], environ={}) == 1
    assert "not both" in capsys.readouterr().err


def test_send_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--file", "/nonexistent/file.csv"], environ={}) == 1
    err = capsys.readouterr().err
    assert err.startswith("genre-produce: ") and "no such file" in err and err.count("\n") == 1


def test_invalid_kafka_environment_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail"], environ={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}) == 2
    assert "SASL" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["audit", "--dlq-topic", "d"])
    assert (args.input_topic, args.output_topic, args.dlq_topic, args.json) == ("overviews", "genres", "d", False)


def test_csv_jsonl_and_lines_readers(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text('id,title,overview,genres\n1,"A, B","Text one",Drama\n,,"Text two",\n')
    assert list(inputs.from_file(csv)) == [
        {"id": "1", "title": "A, B", "overview": "Text one"},
        {"overview": "Text two"},
    ]
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"id": "9", "overview": "x"}\n\n{"overview": "y"}\n')
    assert [m["overview"] for m in inputs.from_file(jl)] == ["x", "y"]
    lines = io.BytesIO(b'plain text\n{"overview": "json", "id": "3"}\n\n')
    assert list(inputs.from_lines(lines)) == [{"overview": "plain text"}, {"overview": "json", "id": "3"}]
    assert list(inputs.raw_lines(io.BytesIO(b"\xff\xfe\n\nok\n"))) == [b"\xff\xfe", b"ok"]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [("a.csv", "title\nx\n", "no 'overview' column"), ("a.jsonl", "{bad\n", "invalid JSON"), ("a.txt", "x", "unknown")],
)
def test_reader_errors_name_the_file(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputFileError, match=fragment):
        list(inputs.from_file(path))


def test_non_utf8_stdin_line_is_refused_with_a_hint() -> None:
    with pytest.raises(InputFileError, match="--raw"):
        list(inputs.from_lines(io.BytesIO(b"ok\n\xff\n")))


def test_encode_uses_id_as_key() -> None:
    key, value = encode({"id": "42", "overview": "Ünïcode"})
    assert key == b"42" and json.loads(value) == {"id": "42", "overview": "Ünïcode"}
    assert encode({"overview": "x"})[0] is None


def test_consumer_refuses_invalid_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert consumer_main([], environ={"GENRE_BATCH_SIZE": "0"}) == EXIT_CONFIG
    assert "batch_size" in capsys.readouterr().err


def test_train_and_eval_parsers() -> None:
    args = train_parser().parse_args(["--data", "d.csv", "--out", "o", "--limit", "10", "--backend", "fp32"])
    assert (args.limit, args.backend, args.folds) == (10, "fp32", 3)
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--out", "o"])  # --data is required
    assert eval_parser().parse_args(["--data", "d.csv", "--json"]).json


def test_objects_loaded_before_serving_are_frozen_out_of_full_collections() -> None:
    loaded = [{"weights": [i]} for i in range(10_000)]  # long-lived containers, like a loaded model's
    try:
        frozen = freeze_loaded_objects()
        assert frozen >= len(loaded)
        assert frozen == gc.get_freeze_count()
        collectable = {id(o) for o in gc.get_objects()}  # the frozen generation is not among them
        assert not any(id(x) in collectable for x in loaded)
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("given", "spin_count"),
    [({}, str(OPENMP_SPIN_COUNT)), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "PASSIVE"}, None)],
)
def test_the_consumer_bounds_openmp_spinning_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], spin_count: str | None
) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    assert consumer_main(["--help"]) == 0
    assert os.environ.get("GOMP_SPINCOUNT") == spin_count


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-b", "a:1", "tail"], "a:1"),
        (["tail", "-b", "b:2"], "b:2"),
        (["--bootstrap-servers", "a:1", "dlq", "show", "--bootstrap-servers", "c:3"], "c:3"),
        (["audit", "-b", "d:4", "--json"], "d:4"),
        (["create-topics", "x", "-b", "e:5"], "e:5"),
        (["tail"], None),
    ],
)
def test_the_bootstrap_servers_are_taken_before_or_after_the_subcommand(argv: list[str], expected: str | None) -> None:
    assert build_parser().parse_args(argv).bootstrap_servers == expected


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"], environ={})
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"genre-produce {version('genre-stream')}"


def test_consumer_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    from consumer.settings import KafkaSettings, ModelSettings, ServiceSettings
    from consumer.settings_reference import env_names

    assert consumer_main(["--help"], environ={}) == 0
    out = capsys.readouterr().out
    for cls in (KafkaSettings, ServiceSettings, ModelSettings):
        for name, info in cls.model_fields.items():
            assert env_names(cls, name, info)[0] in out, name
    assert "GENRE_BATCH_SIZE=" in out and "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092" in out


@pytest.mark.parametrize("argv", [["--bootstrap-servers", "x"], ["-b"], ["--help", "extra"], ["serve"]])
def test_consumer_refuses_arguments_it_does_not_take(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert consumer_main(argv, environ={}) == EXIT_CONFIG
    assert "environment variables" in capsys.readouterr().err
