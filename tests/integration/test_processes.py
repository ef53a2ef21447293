"""Real processes: two replicas sharing partitions, SIGTERM handling, the CLI tools and the demo script."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from consumer.settings import KafkaSettings
from tests.conftest import ROOT
from tests.integration.conftest import Topics, committed_offsets, overview_records, produce, wait_for
from tests.processes import BIN, clean_env, service_env, start_consumer, stop, wait_for_log


def consumer_env(kafka: KafkaSettings, t: Topics, **extra: str) -> dict[str, str]:
    return service_env(
        {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers},
        t,
        GENRE_SESSION_TIMEOUT_MS="10000",
        GENRE_TRANSACTION_TIMEOUT_MS="15000",
        **extra,
    )


def assigned_partitions(log: Path) -> set[str]:
    """Partitions a replica holds at the end, from its assign/revoke log lines."""
    held: set[str] = set()
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r"consumer.service: (assigned|revoke|lost) (.*?)(?: \(\d+ buffered.*)?$", line)
        if m and m.group(2) != "nothing":
            parts = set(m.group(2).split(", "))
            held = held | parts if m.group(1) == "assigned" else held - parts
    return held


@pytest.mark.timeout(400)
def test_two_replicas_share_six_partitions_and_miss_nothing(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    t = make_topics(partitions=6)
    logs = [tmp_path / "replica-1.log", tmp_path / "replica-2.log"]
    procs = [
        # One torch thread each: two replicas on a 2-core machine must not oversubscribe it.
        start_consumer(
            consumer_env(kafka, t, GENRE_TRANSACTIONAL_ID=f"{t.group}-{i}", GENRE_MODEL_TORCH_THREADS="1"), log
        )
        for i, log in enumerate(logs)
    ]
    try:
        for log in logs:
            wait_for_log(log, r"assigned .*\[\d\]")
        # Both hold partitions before the load starts, so the work is shared.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(len(assigned_partitions(log)) == 3 for log in logs):
            time.sleep(0.5)
        shares = [assigned_partitions(log) for log in logs]
        assert [len(s) for s in shares] == [3, 3] and not shares[0] & shares[1], shares
        produce(kafka, t.input, overview_records(real_overviews.iloc[5000:6200]))
        report = wait_for(kafka, t, 1200, timeout_s=300)
    finally:
        codes = [stop(p) for p in procs]
    print(f"\naudit two replicas: {json.dumps(report.to_dict())}")
    assert codes == [0, 0]
    assert all("1 torch thread(s)" in log.read_text() for log in logs)
    assert report.inputs == 1200 and report.missing == 0
    assert report.duplicated == 0  # exactly-once mode; printed above either way
    committed, ends = committed_offsets(kafka, t, 6)
    assert committed == ends


@pytest.mark.timeout(300)
def test_sigterm_finishes_commits_and_leaves_the_group(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    t = make_topics(partitions=2)
    log = tmp_path / "consumer.log"
    proc = start_consumer(consumer_env(kafka, t, GENRE_PROCESSING_GUARANTEE="at_least_once"), log)
    try:
        wait_for_log(log, r"assigned .*\[\d\]")
        produce(kafka, t.input, overview_records(real_overviews.iloc[7000:7300]))
        wait_for_log(log, r"INFO consumer.service", 5)
        time.sleep(0.5)  # mid-stream
    finally:
        code = stop(proc)
    text = log.read_text()
    assert code == 0 and "signal SIGTERM" in text and "left group" in text and "stopped cleanly" in text
    committed, ends = committed_offsets(kafka, t, 2)
    # Whatever was committed was delivered; a restart processes the rest.
    report = wait_for(kafka, t, 0, timeout_s=5)
    assert report.inputs - report.missing >= sum(max(c, 0) for c in committed)
    proc = start_consumer(consumer_env(kafka, t, GENRE_PROCESSING_GUARANTEE="at_least_once"), log)
    try:
        report = wait_for(kafka, t, 300)
    finally:
        assert stop(proc) == 0
    assert report.missing == 0 and report.inputs == 300
    assert committed_offsets(kafka, t, 2)[0] == ends


@pytest.mark.timeout(120)
def test_a_stop_that_outlives_its_deadline_exits_with_every_stack_in_the_log(
    make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    # No broker at this address: the service sits in init_transactions (bounded at 75 s), so a
    # SIGTERM cannot be honoured in time and the stop deadline has to end it.
    t = make_topics(partitions=1)
    log = tmp_path / "consumer.log"
    env = service_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, t, GENRE_STOP_TIMEOUT_S="3")
    proc = start_consumer(env, log)
    wait_for_log(log, r"serving movie-genres@")
    time.sleep(1)
    started = time.monotonic()
    code = stop(proc, timeout_s=30)
    took = time.monotonic() - started
    text = log.read_text(errors="replace")
    assert code == 1 and 3 <= took < 20, (code, took)
    assert "not stopped 3s after the signal (GENRE_STOP_TIMEOUT_S)" in text
    assert re.search(r"Current thread .*\n(.*\n)*.*consumer/service.py.* in run", text), text[-3000:]


@pytest.mark.timeout(300)
def test_cli_send_tail_and_audit(kafka: KafkaSettings, make_topics: Callable[..., Topics], tmp_path: Path) -> None:
    t = make_topics(partitions=1)
    env = consumer_env(kafka, t)
    cli = str(BIN / "genre-produce")
    sent = subprocess.run(
        [
            cli,
            "send",
            "--topic",
            t.input,
            "--no-progress",
            "--rate",
            "50",
            "A spy must stop a nuclear plot in Berlin.",
            "A shy girl befriends a dragon.",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "delivered 2 of 2" in sent.stdout
    piped = subprocess.run(
        [cli, "send", "--topic", t.input, "-"],
        input='{"id": "x1", "overview": "Zombies overrun a mall."}\n',
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "delivered 1 of 1" in piped.stdout
    log = tmp_path / "c.log"
    proc = start_consumer(env, log)
    try:
        tail = subprocess.run(
            [cli, "tail", "--topic", t.output, "--from-beginning", "--max", "3", "--timeout", "120", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
    finally:
        assert stop(proc) == 0
    predictions = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(predictions) == 3 and {p["source"]["offset"] for p in predictions} == {0, 1, 2}
    assert any(p["id"] == "x1" for p in predictions) and all(p["genres"] for p in predictions)
    audit = subprocess.run(
        [cli, "audit", "--input-topic", t.input, "--output-topic", t.output, "--dlq-topic", t.dlq, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["missing"] == 0


@pytest.mark.timeout(400)
def test_demo_script_prints_predictions(kafka: KafkaSettings, tmp_path: Path) -> None:
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, DEMO_STATE_DIR=str(tmp_path), VENV=str(BIN.parent))
    demo = subprocess.run(
        [str(ROOT / "scripts" / "demo")], env=env, capture_output=True, text=True, timeout=360, check=False
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    samples = [json.loads(line) for line in (ROOT / "data" / "sample_overviews.jsonl").read_text().splitlines()]
    for sample in samples:
        assert re.search(rf"^{sample['id']} \(.*\) -> \w", demo.stdout, re.M), demo.stdout
    assert f"inputs {len(samples) + 1}  outputs {len(samples)}  dead letters 1  missing 0  duplicated 0" in demo.stdout


@pytest.mark.timeout(300)
def test_a_shadow_model_without_its_topic_is_refused_at_start_up_until_create_topics_makes_it(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    t = make_topics(partitions=1)
    env = consumer_env(kafka, t, GENRE_MODEL_SHADOW_URI=str(ROOT / "model" / "artifacts" / "default"))
    log = tmp_path / "consumer.log"
    proc = start_consumer(env, log)
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = log.read_text(errors="replace")
    assert code == 2, text[-3000:]
    assert f"topic(s) {t.output}.shadow do not exist" in text and "Traceback" not in text
    made = subprocess.run(
        [str(BIN / "genre-produce"), "create-topics", "--partitions", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"{t.output}.shadow" in made.stdout
    proc = start_consumer(env, log)
    try:
        wait_for_log(log, r"assigned .*\[0\]", start=len(text))
    finally:
        assert stop(proc) == 0
