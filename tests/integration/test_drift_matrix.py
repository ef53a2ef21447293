"""Drift on real overviews and the served model: quiet for a stable stream at any rate, an alert for a
shifted one within the documented time (docs/operations.md, "GenreDriftHigh").

Streams are simulated in time: each minute the records that arrived are observed, then every
signal is read as Prometheus would scrape it, and the alert condition of deploy/prometheus/rules.yml
(score > 0.25 and p-value < 0.001, held for 30 minutes) is applied.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from consumer.drift import DriftMonitor
from model.serving.predictor import Predictor

RATES = {"1/min": 1 / 60, "1/s": 1.0, "100/s": 100.0}
ALERT_FOR_MIN = 30
STABLE_MINUTES = 240
WARM_UP_MINUTES = 120
# The documented bound on the time from a shift to the alert, per rate (docs/operations.md).
ALERT_WITHIN_MIN = {"1/min": 480, "1/s": 60, "100/s": 35}
OTHER_LANGUAGE = Path(__file__).resolve().parents[1] / "data" / "other_language_overviews.json"


@dataclass(frozen=True)
class Stream:
    texts: list[str]
    scores: list[dict[str, float]]


def _stream(predictor: Predictor, overviews: Sequence[str], titles: Sequence[str | None] | None) -> Stream:
    predictions = predictor.predict(list(overviews), list(titles) if titles is not None else None)
    return Stream(list(overviews), [p.scores for p in predictions])


@pytest.fixture(scope="module")
def streams(predictor: Predictor, real_overviews: pd.DataFrame) -> dict[str, Stream]:
    # Movies the reference never saw (the training reference comes from the training split's head).
    sample = real_overviews.sample(n=1500, random_state=7)
    horror = real_overviews[real_overviews["genres"].str.fullmatch("Horror")].head(400)
    other = json.loads(OTHER_LANGUAGE.read_text(encoding="utf-8"))["overviews"]
    short = [" ".join(o.split()[:4]) for o in sample["overview"].head(600)]
    return {
        "stable": _stream(predictor, sample["overview"].tolist(), sample["title"].tolist()),
        "very short texts": _stream(predictor, short, None),
        "one genre (Horror only)": _stream(predictor, horror["overview"].tolist(), horror["title"].tolist()),
        "another language": _stream(predictor, other, None),
    }


def _run(monitor: DriftMonitor, stream: Stream, rate: float, minutes: int, rng: random.Random) -> int | None:
    """Feeds `minutes` of `stream` at `rate`; the minute the alert fires (condition held 30 min), or None."""
    held: dict[str, int] = {}
    sent = 0
    window = monitor.window
    for minute in range(1, minutes + 1):
        due = math.floor(rate * 60 * minute) - sent
        sent += due
        for _ in range(min(due, window)):  # older ones would leave the window before it is read
            i = rng.randrange(len(stream.texts))
            monitor.observe(stream.texts[i], stream.scores[i])
        for signal, reading in monitor.readings().items():
            held[signal] = held.get(signal, 0) + 1 if reading.drifted else 0
            if held[signal] >= ALERT_FOR_MIN:
                return minute
    return None


def _monitor(predictor: Predictor) -> DriftMonitor:
    return DriftMonitor(predictor.artifact.reference, predictor.labels)


@pytest.mark.parametrize("rate", RATES)
def test_a_stable_stream_never_alerts(rate: str, streams: dict[str, Stream], predictor: Predictor) -> None:
    monitor = _monitor(predictor)
    fired = _run(monitor, streams["stable"], RATES[rate], STABLE_MINUTES, random.Random(1))
    readings = monitor.readings()
    print(
        f"stable at {rate}: {len(monitor)} records in the window, "
        + ", ".join(
            f"{s} {r.score:.3f} (p {r.p_value:.2g}{'' if r.valid else ', not exported'})" for s, r in readings.items()
        )
    )
    assert fired is None, f"a stable stream at {rate} alerted after {fired} min"


@pytest.mark.parametrize("shift", ["very short texts", "one genre (Horror only)", "another language"])
@pytest.mark.parametrize("rate", RATES)
def test_a_shifted_stream_alerts_within_the_documented_time(
    rate: str, shift: str, streams: dict[str, Stream], predictor: Predictor
) -> None:
    monitor = _monitor(predictor)
    rng = random.Random(2)
    assert _run(monitor, streams["stable"], RATES[rate], WARM_UP_MINUTES, rng) is None
    fired = _run(monitor, streams[shift], RATES[rate], ALERT_WITHIN_MIN[rate], rng)
    drifted = sorted(s for s, r in monitor.readings().items() if r.drifted)
    print(f"{shift} at {rate}: alert {fired} min after the shift; drifted signals {drifted}")
    assert fired is not None, f"{shift} at {rate}: no alert within {ALERT_WITHIN_MIN[rate]} min"
