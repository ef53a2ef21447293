"""SASL/SCRAM over TLS: anonymous and wrong-password clients are refused, the service with credentials works."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.settings import KafkaSettings
from producer_tools import clients
from producer_tools.topics import create_topics
from tests.integration.conftest import Topics, overview_records, produce, wait_for
from tests.processes import LocalCluster, service_env, start_consumer, stop, wait_for_log


def cluster_metadata(config: dict[str, str | int]) -> None:
    AdminClient(config).list_topics(timeout=8)


@pytest.mark.timeout(400)
def test_secured_broker_refuses_strangers_and_serves_the_service(
    make_cluster: Callable[..., LocalCluster], real_overviews: pd.DataFrame, tmp_path: Path
) -> None:
    cluster = make_cluster(1, "sasl_ssl")
    creds = cluster.client_env
    password = creds["KAFKA_SASL_PASSWORD"]
    kafka = KafkaSettings.from_env(creds)
    assert kafka.security_protocol == "SASL_SSL"

    # No credentials, plaintext: the TLS/SASL listener never completes a handshake.
    with pytest.raises(KafkaException):
        cluster_metadata({"bootstrap.servers": cluster.bootstrap, "security.protocol": "PLAINTEXT"})
    # TLS but a wrong password: authentication fails.
    wrong = {**kafka.client_config(), "sasl.password": password + "x"}
    with pytest.raises(KafkaException) as refused:
        cluster_metadata(wrong)  # type: ignore[arg-type]
    print(f"\nwrong password refused: {refused.value.args[0]}")
    # TLS without trusting the private CA: the certificate is rejected.
    untrusted = {k: v for k, v in kafka.client_config().items() if k != "ssl.ca.location"}
    with pytest.raises(KafkaException):
        cluster_metadata(untrusted)  # type: ignore[arg-type]

    t = Topics("sec.overviews", "sec.genres", "sec.overviews.dlq", "sec-group")
    create_topics(clients.admin(kafka), [t.input, t.output, t.dlq], 2)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:200]))
    log = tmp_path / "consumer.log"
    env = service_env(creds, t, GENRE_LOG_LEVEL="DEBUG")
    proc = start_consumer(env, log)
    try:
        wait_for_log(log, r"assigned .*\[\d\]")
        report = wait_for(kafka, t, 200, timeout_s=240)
    finally:
        assert stop(proc) == 0
    print(f"secured run: {json.dumps(report.to_dict())}")
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (200, 200, 0, 0)
    assert password not in log.read_text(), "the SASL password must never be logged"
