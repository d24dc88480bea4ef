"""promtool on the example Prometheus config, the rules, and the rules' unit tests.

``promtool check config`` / ``check rules`` validate syntax and PromQL; ``promtool test
rules`` runs prometheus/tests/*.test.yml, which make every alert fire and stay silent on
synthetic series. promtool comes with Debian's ``prometheus`` package
(scripts/install-test-tools.sh); without it these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: run scripts/install-test-tools.sh (Debian package prometheus)",
)


def promtool(*args: str | Path) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def test_files_exist() -> None:
    assert RULES, "no rule files in prometheus/rules"
    assert len(UNIT_TESTS) >= 5, UNIT_TESTS


def test_check_config() -> None:
    out = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert "SUCCESS" in out and "FAILED" not in out, out
    # The config loads the rule files it names (relative to itself), all of them.
    assert f"SUCCESS: {len(RULES)} rule files found" in out, out


def test_check_rules() -> None:
    out = promtool("check", "rules", *RULES)
    assert "FAILED" not in out, out


def test_unit_tests_cover_every_alert() -> None:
    alerts = {
        line.split(":", 1)[1].strip()
        for path in RULES
        for line in path.read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    tested = "\n".join(p.read_text() for p in UNIT_TESTS)
    assert alerts, "no alerts found"
    for alert in sorted(alerts):
        # every alert has a case where it fires (exp_alerts with labels) and one where it
        # must not (an empty exp_alerts), both named in a test file
        assert f"alertname: {alert}\n" in tested, f"{alert} has no promtool unit test"


def test_rules_unit_tests() -> None:
    out = promtool("test", "rules", *UNIT_TESTS)
    assert out.count("SUCCESS") == len(UNIT_TESTS), out
    assert "FAILED" not in out, out


def _keys(doc: object) -> set[str]:
    if isinstance(doc, dict):
        return {str(k) for k in doc} | {k for v in doc.values() for k in _keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in _keys(v)}
    return set()


def test_no_secrets_in_prometheus_files() -> None:
    """/metrics needs no credentials: no auth setting (hence no secret) in these files."""
    secret_keys = {
        "authorization",
        "basic_auth",
        "bearer_token",
        "bearer_token_file",
        "password",
        "password_file",
        "oauth2",
        "credentials",
        "credentials_file",
    }
    for path in PROMETHEUS.rglob("*.yml"):
        found = _keys(yaml.safe_load(path.read_text())) & secret_keys
        assert not found, f"{path}: {found}"
