"""Configuration that cannot hurt: guarantee options are not overridable, and no secret reaches an error line."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumer.__main__ import EXIT_CONFIG, config_errors
from consumer.__main__ import main as consumer_main
from consumer.settings import GUARANTEE_OPTIONS, InvalidSettingsError, KafkaSettings, Settings

SECRET = "s3cr3t-Pa55word-do-not-print"


@pytest.mark.parametrize("option", [*sorted(GUARANTEE_OPTIONS), "error_cb", "on_commit"])
def test_kafka_extra_cannot_override_what_the_guarantee_rests_on(option: str) -> None:
    with pytest.raises(ValidationError, match=f"KAFKA_EXTRA may not set {option}"):
        KafkaSettings.from_env({"KAFKA_EXTRA": json.dumps({option: "x", "sasl.password": SECRET})})


def test_kafka_extra_still_passes_what_the_service_does_not_own() -> None:
    k = KafkaSettings.from_env({"KAFKA_EXTRA": json.dumps({"socket.keepalive.enable": True, "linger.ms": 20})})
    assert k.client_config()["linger.ms"] == 20


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        # Incomplete SASL: the model validator fails with every value, the password too, in hand.
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": SECRET}, "SASL needs"),
        (
            {"KAFKA_EXTRA": json.dumps({"sasl.oauthbearer.client.secret": SECRET, "isolation.level": "x"})},
            "may not set isolation.level",
        ),
        ({"KAFKA_EXTRA": "{'sasl.password': '" + SECRET + "'"}, "KAFKA_EXTRA is not a JSON object"),
    ],
)
def test_a_config_error_at_start_up_prints_no_secret(
    env: dict[str, str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert consumer_main([], environ=env) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert fragment in err and SECRET not in err


# Environment values an operator (or a template gone wrong) may set: anything printable.
env_text = st.text(string.printable + "é€\u0000", max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    env=st.dictionaries(
        st.sampled_from(
            [
                "GENRE_BATCH_SIZE",
                "GENRE_PROCESSING_GUARANTEE",
                "GENRE_DELIVERY_TIMEOUT_S",
                "GENRE_LIVENESS_TIMEOUT_S",
                "GENRE_INPUT_TOPIC",
                "KAFKA_SECURITY_PROTOCOL",
                "KAFKA_EXTRA",
                "GENRE_MODEL_CANARY_SHARE",
                "GENRE_OVERLONG_POLICY",
            ]
        ),
        env_text,
        max_size=5,
    )
)
def test_any_environment_loads_or_is_refused_with_a_message_that_hides_its_values(env: dict[str, str]) -> None:
    env = {**env, "KAFKA_SASL_PASSWORD": SECRET}
    try:
        Settings.from_env(env)
    except (ValidationError, InvalidSettingsError) as exc:
        message = config_errors(exc)
        assert message.strip() and SECRET not in message
