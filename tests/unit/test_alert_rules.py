"""The alert rules, evaluated by Prometheus' own rule test runner on synthetic series."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "rules_test.yml"


def _promtool() -> Path:
    """scripts/promtool (builds it once from the Go module proxy). Only a developer machine without
    Go skips; in CI a missing promtool fails."""
    if shutil.which("go") is None and not os.environ.get("CI") and not _cached():
        pytest.skip("promtool is built with Go, which this machine lacks (CI has it)")
    return ROOT / "scripts" / "promtool"


def _cached() -> bool:
    cache = Path(os.environ.get("PROMTOOL_CACHE", Path.home() / ".cache" / "genre-promtool"))
    return any(cache.glob("*/promtool"))


def _alerts() -> list[str]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_rule_file_passes_promtools_checks() -> None:
    run = subprocess.run(
        [_promtool(), "check", "rules", RULES], check=False, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_every_alert_fires_and_stays_quiet_as_its_tests_expect() -> None:
    run = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS], check=False, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert "SUCCESS" in run.stdout + run.stderr


def test_every_alert_has_a_case_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fires, quiet = set(), set()
    for group in tests:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(_alerts()) - fires == set(), "alerts no test fires"
    assert set(_alerts()) - quiet == set(), "alerts no test keeps quiet"
