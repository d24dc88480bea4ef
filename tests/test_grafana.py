"""The Grafana side: the dashboard has the panels operators need, and the provisioning
files agree with it and with the Prometheus they point at.

(The metric names, the ``$connection`` filter and the committed-JSON-equals-generator
check live in test_metrics.py; every expression is run against a real Prometheus in
test_prometheus_live.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GRAFANA / "dashboard.json").read_text(encoding="utf-8"))
    return doc


def panels() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in dashboard()["panels"] if p["type"] != "row"}


def exprs_of(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


# What the operations issue asks for, as (panel title, a metric its queries must use).
REQUIRED = [
    ("Slots held vs fair share per connection", "slots_held"),
    ("Slots held vs fair share per connection", "fair_share_slots"),
    ("Capacity utilisation", "capacity_slots"),
    ("Slot wait p50 / p95", "slot_wait_seconds_bucket"),
    ("FetchTask requests/s by outcome", "fetch_requests_total"),
    ("Fetch retries and reused request keys", "fetch_retries_total"),
    ("Fetch retries and reused request keys", "request_keys_reused_total"),
    ("Recovered and rejected tasks", "tasks_recovered_total"),
    ("Jain fairness index", "fairness_jain_index"),
    ("Tasks running per connection", "tasks_running"),
    ("Tasks finished by result (per minute)", "tasks_finished_total"),
    ("Task duration p50 / p95", "task_duration_seconds_bucket"),
    ("Connection up", "connection_up"),
    ("Time since last successful fetch", "last_successful_fetch_timestamp_seconds"),
    ("Age of the unresolved request key", "request_key_unresolved_since_timestamp_seconds"),
    ("Connections waiting for a slot", "connection_waiting_for_slot"),
]


def test_every_required_panel_exists_and_queries_its_metric() -> None:
    found = panels()
    for title, metric in REQUIRED:
        assert title in found, f"missing panel {title!r}; have {sorted(found)}"
        text = " ".join(exprs_of(found[title]))
        assert re.search(rf"\bforgejo_scheduler_{metric}\b", text), (title, metric, text)


def test_quantile_panels_ask_for_the_quantiles_their_titles_promise() -> None:
    for title, panel in panels().items():
        wanted = {f"0.{q[1:]}" if q != "p50" else "0.5" for q in re.findall(r"p\d\d", title)}
        got = {m for e in exprs_of(panel) for m in re.findall(r"histogram_quantile\(([\d.]+)", e)}
        assert wanted == got, (title, wanted, got)


def test_fetch_outcome_and_result_panels_split_by_their_label() -> None:
    found = panels()
    assert "sum by (outcome)" in exprs_of(found["FetchTask requests/s by outcome"])[0]
    assert "sum by (result)" in exprs_of(found["Tasks finished by result (per minute)"])[0]


def test_uid_and_variables_are_fixed() -> None:
    doc = dashboard()
    assert doc["uid"] == "forgejo-scheduler"
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["datasource", "connection"]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def test_datasource_provisioning_is_the_default_prometheus() -> None:
    data = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")
    assert data["apiVersion"] == 1
    (ds,) = data["datasources"]
    assert ds["type"] == "prometheus" == dashboard()["templating"]["list"][0]["query"]
    # The dashboard's datasource variable starts on the default data source.
    assert ds["isDefault"] is True and ds["uid"] == "prometheus"
    assert ds["url"].startswith("http://prometheus:9090")
    assert re.fullmatch(r"\d+s", ds["jsonData"]["timeInterval"])


def test_dashboard_provider_reads_a_directory_the_dashboard_is_mounted_into() -> None:
    data = load(GRAFANA / "provisioning" / "dashboards" / "forgejo-scheduler.yaml")
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False  # the generator is the source of truth
    path = provider["options"]["path"]
    compose = ROOT / "examples" / "compose.yaml"
    if compose.exists():  # the example stack mounts the dashboard where the provider looks
        text = compose.read_text(encoding="utf-8")
        assert re.search(rf"dashboard\.json:{re.escape(path)}/", text), text
