"""Fault tests on real processes and brokers: kill -9, scaling, broker outage, broker loss, persistent failure.

Every test prints its audit figures; counts and times are bounded so the tier fits in CI.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from consumer.settings import KafkaSettings
from producer_tools import clients
from producer_tools.audit import AuditReport
from producer_tools.topics import create_topics
from tests.integration.conftest import Topics, committed_offsets, overview_records, produce, wait_for
from tests.processes import LocalCluster, service_env, start_consumer, stop, wait_for_log

ASSIGNED = r"assigned .*\[\d+\]"


def env_for(bootstrap: str, t: Topics, slot: int = 0, **extra: str) -> dict[str, str]:
    return service_env(
        {"KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        t,
        GENRE_SESSION_TIMEOUT_MS="6000",
        GENRE_TRANSACTION_TIMEOUT_MS="20000",
        # One stable id per replica slot: a restart fences its killed predecessor at once.
        GENRE_TRANSACTIONAL_ID=f"{t.group}-slot{slot}",
        **extra,
    )


def private_topics(cluster: LocalCluster, name: str, partitions: int) -> tuple[KafkaSettings, Topics]:
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap)
    t = Topics(f"{name}.overviews", f"{name}.genres", f"{name}.overviews.dlq", f"{name}-group")
    create_topics(clients.admin(kafka), [t.input, t.output, t.dlq], partitions)
    return kafka, t


def wait_handled(kafka: KafkaSettings, t: Topics, at_least: int, timeout_s: float) -> AuditReport:
    report = wait_for(kafka, t, at_least, timeout_s=timeout_s)
    assert report.inputs - report.missing >= at_least, f"only {report.inputs - report.missing} handled in {timeout_s}s"
    return report


def show(label: str, report: AuditReport, **extra: object) -> None:
    figures = {k: v for k, v in report.to_dict().items() if not k.endswith("_sample")}
    print(f"\n{label}: {json.dumps({**figures, **extra})}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_ten_kill9_during_a_20000_message_run(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    real_overviews: pd.DataFrame,
    tmp_path: Path,
    guarantee: str,
) -> None:
    t = make_topics(partitions=6)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:20_000]))
    # One pass at a time on one thread: the run must outlast the ten kills on fast CPUs too (with
    # both cores, packed passes rounded to 16 tokens finished all 20,000 before the last kill).
    env = env_for(
        kafka.bootstrap_servers,
        t,
        GENRE_PROCESSING_GUARANTEE=guarantee,
        GENRE_MODEL_PASS_WORKERS="1",
        GENRE_MODEL_TORCH_THREADS="1",
    )
    log = tmp_path / "consumer.log"
    rng = random.Random(20_000)
    kills: list[float] = []
    started = time.monotonic()
    for _ in range(10):
        offset = log.stat().st_size if log.exists() else 0
        proc = start_consumer(env, log)
        wait_for_log(log, ASSIGNED, start=offset)
        time.sleep(rng.uniform(2.0, 9.0))  # a random moment: mid-batch, mid-transaction, mid-commit
        assert proc.poll() is None, "the consumer died on its own"
        proc.kill()
        proc.wait(30)
        kills.append(round(time.monotonic() - started, 1))
    committed_before_final, _ = committed_offsets(kafka, t, 6)
    # The last replica drains the rest on every core: one thread only had to outlast the kills, and
    # the rest took a third of the suite's time on CPUs without AMX.
    final_env = {k: v for k, v in env.items() if k not in ("GENRE_MODEL_PASS_WORKERS", "GENRE_MODEL_TORCH_THREADS")}
    proc = start_consumer(final_env, log)
    try:
        report = wait_handled(kafka, t, 20_000, timeout_s=600)
    finally:
        assert stop(proc) == 0
    done_at_last_kill = sum(max(c, 0) for c in committed_before_final)
    show(f"kill -9 x10 ({guarantee})", report, kills_at_s=kills, committed_before_final_run=done_at_last_kill)
    assert 0 < done_at_last_kill < 20_000, "the kills must fall inside the run"
    assert report.inputs == 20_000 and report.missing == 0
    if guarantee == "exactly_once":
        assert report.duplicated == 0 and report.outputs == 20_000
    assert committed_offsets(kafka, t, 6)[0] == committed_offsets(kafka, t, 6)[1]


@pytest.mark.timeout(600)
def test_scale_one_to_three_to_one_under_load(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    t = make_topics(partitions=6)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:6000]))
    logs = [tmp_path / f"replica-{i}.log" for i in range(3)]
    # One pass on one thread per replica, so the scale-down still finds a backlog on fast CPUs.
    slow = {"GENRE_MODEL_PASS_WORKERS": "1", "GENRE_MODEL_TORCH_THREADS": "1"}
    first = start_consumer(env_for(kafka.bootstrap_servers, t, 0, **slow), logs[0])
    try:
        wait_handled(kafka, t, 1000, timeout_s=180)
        extra = [start_consumer(env_for(kafka.bootstrap_servers, t, i, **slow), logs[i]) for i in (1, 2)]
        for log in logs[1:]:
            wait_for_log(log, ASSIGNED)
        mid = wait_handled(kafka, t, mid_count(wait_for(kafka, t, 0, timeout_s=5)) + 600, timeout_s=300)
        codes = [stop(p) for p in extra]  # scale back to one while the backlog is still there
        assert codes == [0, 0]
        report = wait_handled(kafka, t, 6000, timeout_s=400)
    finally:
        first_code = stop(first)
    show("scale 1 -> 3 -> 1", report, handled_when_scaling_down=mid.inputs - mid.missing)
    assert first_code == 0
    assert mid.inputs - mid.missing < 6000, "scale-down must happen under load"
    assert (report.inputs, report.missing, report.duplicated) == (6000, 0, 0)


def mid_count(report: AuditReport) -> int:
    return report.inputs - report.missing


@pytest.mark.timeout(600)
def test_broker_down_for_30s_is_survived_without_restart(
    make_cluster: Callable[[int], LocalCluster], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    kafka, t = private_topics(cluster, "outage", 4)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:4000]))
    proc = start_consumer(env_for(cluster.bootstrap, t), tmp_path / "consumer.log")
    try:
        wait_handled(kafka, t, 500, timeout_s=180)
        cluster.stop_node(1)
        down_at = time.monotonic()
        time.sleep(30)
        assert proc.poll() is None, "the consumer must ride out the outage"
        cluster.start_node(1)
        outage_s = round(time.monotonic() - down_at, 1)
        report = wait_handled(kafka, t, 4000, timeout_s=400)
        assert proc.poll() is None, "caught up without a restart"
    finally:
        code = stop(proc)
    show("broker stopped 30 s", report, outage_s=outage_s)
    assert code == 0
    assert (report.inputs, report.missing, report.duplicated) == (4000, 0, 0)


def transaction_coordinator(bootstrap: str, transactional_id: str, timeout_s: float = 60) -> int:
    """The broker that coordinates `transactional_id` now, asked of the cluster (FindCoordinator +
    DescribeTransactions, through kafka-python), not derived from a naming convention. In a child
    process, so sockets kafka-python leaves open never reach the test process."""
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE_TRANSACTION, bootstrap, transactional_id, str(timeout_s)],
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


DESCRIBE_TRANSACTION = """
import sys, time
from kafka.admin import KafkaAdminClient

bootstrap, txn_id, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
deadline = time.monotonic() + timeout_s
while True:
    try:
        print(admin.describe_transactions([txn_id])[txn_id].coordinator_id)
        break
    except Exception:  # not known yet (the producer is initialising): ask again
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
admin.close()
"""


@pytest.mark.timeout(600)
def test_killing_the_transaction_coordinator_mid_run_is_survived_by_the_same_process(
    make_cluster: Callable[[int], LocalCluster], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    kafka, t = private_topics(cluster, "replicated", 6)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:3000]))
    env = env_for(cluster.bootstrap, t)
    log = tmp_path / "consumer.log"
    proc = start_consumer(env, log)
    try:
        wait_handled(kafka, t, 500, timeout_s=240)
        coordinator = transaction_coordinator(cluster.bootstrap, env["GENRE_TRANSACTIONAL_ID"])
        cluster.kill_node(coordinator)
        killed_at = time.monotonic()
        report = wait_handled(kafka, t, 3000, timeout_s=400)
        assert proc.poll() is None, "the same process must recover, not exit"
        moved_to = transaction_coordinator(cluster.bootstrap, env["GENRE_TRANSACTIONAL_ID"])
    finally:
        code = stop(proc)
    text = log.read_text(errors="replace")
    show(
        "3 brokers, transaction coordinator killed",
        report,
        coordinator=coordinator,
        moved_to=moved_to,
        recovered_in_s=round(time.monotonic() - killed_at, 1),
        producer_replaced="replacing the producer" in text,
    )
    assert code == 0 and moved_to != coordinator
    assert (report.inputs, report.missing, report.duplicated) == (3000, 0, 0)
    assert committed_offsets(kafka, t, 6)[0] == committed_offsets(kafka, t, 6)[1]


@pytest.mark.timeout(600)
def test_persistent_failure_exits_nonzero_then_a_restart_loses_nothing(
    make_cluster: Callable[[int], LocalCluster], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    kafka, t = private_topics(cluster, "persistent", 2)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:3000]))
    log = tmp_path / "consumer.log"
    env = env_for(
        cluster.bootstrap, t, GENRE_MAX_RETRIES="2", GENRE_DELIVERY_TIMEOUT_S="3", GENRE_MAX_UNAVAILABLE_S="20"
    )
    proc = start_consumer(env, log)
    try:
        wait_handled(kafka, t, 300, timeout_s=180)
        cluster.stop_node(1)
        code = proc.wait(180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = log.read_text()
    assert code == 1, text[-3000:]
    # Whichever bound is hit first: batches that keep failing, or no broker at all.
    assert "giving up after 3 failed batch deliveries" in text or "Kafka cluster unreachable for" in text
    cluster.start_node(1)
    proc = start_consumer(env_for(cluster.bootstrap, t), log)
    try:
        report = wait_handled(kafka, t, 3000, timeout_s=400)
    finally:
        assert stop(proc) == 0
    show("persistent failure, then restart", report)
    assert (report.inputs, report.missing, report.duplicated) == (3000, 0, 0)
