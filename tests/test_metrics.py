"""scheduler.metrics: series exist at 0, bounded labels, no _created, and nothing drifts.

Everything is checked on the exposition text (``generate_latest``), i.e. what
Prometheus would scrape, not on the prometheus_client objects.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from scheduler.config import Share
from scheduler.metrics import (
    FETCH_DURATION_BUCKETS,
    FETCH_OUTCOMES,
    SLOT_WAIT_BUCKETS,
    TASK_DURATION_BUCKETS,
    TASK_RESULTS,
    Metrics,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboard.json"
PREFIX = "forgejo_scheduler_"

# Family name -> (type, label names besides le), straight from the interface contract.
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "capacity_slots": ("gauge", ()),
    "slots_held": ("gauge", ("connection",)),
    "slots_reserved": ("gauge", ("connection",)),
    "fair_share_slots": ("gauge", ("connection",)),
    "slot_wait_seconds": ("histogram", ("connection",)),
    "connection_waiting_for_slot": ("gauge", ("connection",)),
    "fairness_jain_index": ("gauge", ()),
    "fetch_requests": ("counter", ("connection", "outcome")),
    "fetch_duration_seconds": ("histogram", ("connection",)),
    "fetch_retries": ("counter", ("connection",)),
    "request_keys_reused": ("counter", ("connection",)),
    "request_key_unresolved_since_timestamp_seconds": ("gauge", ("connection",)),
    "request_key_rotations": ("counter", ("connection",)),
    "tasks_received": ("counter", ("connection",)),
    "tasks_recovered": ("counter", ("connection",)),
    "tasks_rejected": ("counter", ("connection",)),
    "tasks_running": ("gauge", ("connection",)),
    "tasks_finished": ("counter", ("connection", "result")),
    "task_duration_seconds": ("histogram", ("connection",)),
    "connection_up": ("gauge", ("connection",)),
    "last_successful_fetch_timestamp_seconds": ("gauge", ("connection",)),
    "connection_weight": ("gauge", ("connection",)),
    "connection_min_slots": ("gauge", ("connection",)),
    "connection_max_slots": ("gauge", ("connection",)),
    "build_info": ("gauge", ("version",)),
}
PER_CONNECTION = {n for n, (_, labels) in EXPECTED.items() if "connection" in labels}
ENUM_LABEL_VALUES = {"outcome": FETCH_OUTCOMES, "result": TASK_RESULTS}


def scrape(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def families(m: Metrics) -> dict[str, Any]:
    return {f.name.removeprefix("forgejo_scheduler_"): f for f in parse(scrape(m))}


def parse(text: str) -> Iterable[Any]:
    return text_string_to_metric_families(text)


def samples(m: Metrics) -> list[Sample]:
    return [s for f in parse(scrape(m)) for s in f.samples]


def value(m: Metrics, name: str, **labels: str) -> float | None:
    for s in samples(m):
        if s.name == f"forgejo_scheduler_{name}" and s.labels == labels:
            return float(s.value)
    return None


def connection_samples(m: Metrics, connection: str) -> list[Sample]:
    return [s for s in samples(m) if s.labels.get("connection") == connection]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(capacity=6, connections=["codeberg", "home"], version="1.2.3")


# --- construction -------------------------------------------------------------------


def test_every_family_has_its_type_and_labels(metrics: Metrics) -> None:
    fams = families(metrics)
    assert set(fams) == set(EXPECTED)
    for name, (typ, labels) in EXPECTED.items():
        assert fams[name].type == typ, name
        for s in fams[name].samples:
            assert set(s.labels) - {"le"} == set(labels), (name, s)


def test_every_per_connection_series_exists_at_zero_after_construction(metrics: Metrics) -> None:
    fams = families(metrics)
    for name in PER_CONNECTION:
        for conn in ("codeberg", "home"):
            got = [s for s in fams[name].samples if s.labels["connection"] == conn]
            assert got, f"{name} has no series for {conn}"
            if name.startswith("connection_") and name != "connection_up":
                continue  # the config gauges carry the config, checked below
            assert all(s.value == 0 for s in got), (name, conn, got)


def test_every_outcome_and_result_label_value_exists_per_connection(metrics: Metrics) -> None:
    for conn in ("codeberg", "home"):
        for outcome in FETCH_OUTCOMES:
            assert value(metrics, "fetch_requests_total", connection=conn, outcome=outcome) == 0
        for result in TASK_RESULTS:
            assert value(metrics, "tasks_finished_total", connection=conn, result=result) == 0


def test_histograms_exist_at_zero_with_every_bucket(metrics: Metrics) -> None:
    for name, buckets in [
        ("slot_wait_seconds", SLOT_WAIT_BUCKETS),
        ("fetch_duration_seconds", FETCH_DURATION_BUCKETS),
        ("task_duration_seconds", TASK_DURATION_BUCKETS),
    ]:
        assert value(metrics, f"{name}_count", connection="home") == 0
        assert value(metrics, f"{name}_sum", connection="home") == 0
        les = {
            s.labels["le"]
            for s in samples(metrics)
            if s.name == f"forgejo_scheduler_{name}_bucket" and s.labels["connection"] == "home"
        }
        assert les == {str(float(b)) for b in buckets} | {"+Inf"}


def test_bucket_ranges_fit_what_they_measure() -> None:
    for buckets in (SLOT_WAIT_BUCKETS, FETCH_DURATION_BUCKETS, TASK_DURATION_BUCKETS):
        assert list(buckets) == sorted(set(buckets))
    assert SLOT_WAIT_BUCKETS[0] <= 0.001 and SLOT_WAIT_BUCKETS[-1] >= 1800  # ms .. minutes
    assert FETCH_DURATION_BUCKETS[0] <= 0.01 and FETCH_DURATION_BUCKETS[-1] == 60
    assert TASK_DURATION_BUCKETS[0] == 1 and TASK_DURATION_BUCKETS[-1] == 6 * 3600


def test_global_values_and_defaults_from_construction(metrics: Metrics) -> None:
    assert value(metrics, "capacity_slots") == 6
    assert value(metrics, "build_info", version="1.2.3") == 1
    assert value(metrics, "fairness_jain_index") == 1  # nobody competing: fair
    # __init__ registers connections with weight 1, no guarantee, capped at capacity.
    assert value(metrics, "connection_weight", connection="home") == 1
    assert value(metrics, "connection_min_slots", connection="home") == 0
    assert value(metrics, "connection_max_slots", connection="home") == 6


def test_no_created_series_in_text_or_openmetrics(metrics: Metrics) -> None:
    metrics.fetch_requests_total.labels("home", "tasks").inc()
    metrics.task_duration_seconds.labels("home").observe(3)
    text = scrape(metrics)
    om = generate_openmetrics(metrics.registry).decode()  # type: ignore[no-untyped-call]
    assert "_created" not in text
    assert "_created" not in om
    assert om.rstrip().endswith("# EOF")


def test_created_suppression_is_local_to_this_registry() -> None:
    """We must not have flipped prometheus_client's process-global switch."""
    Metrics(capacity=1, connections=["a"], version="x")
    other = CollectorRegistry()
    Counter("unrelated_total", "someone else's counter", registry=other).inc()
    assert "unrelated_created" in generate_latest(other).decode()


def test_global_registry_is_untouched_and_instances_are_independent() -> None:
    from prometheus_client import REGISTRY

    before = generate_latest(REGISTRY)
    a = Metrics(capacity=2, connections=["x"], version="1")
    b = Metrics(capacity=2, connections=["x"], version="1")  # no "Duplicated timeseries"
    a.tasks_received_total.labels("x").inc(5)
    assert value(a, "tasks_received_total", connection="x") == 5
    assert value(b, "tasks_received_total", connection="x") == 0
    assert b"forgejo_scheduler" not in before
    assert b"forgejo_scheduler" not in generate_latest(REGISTRY)


def test_only_bounded_label_values_appear(metrics: Metrics) -> None:
    """Connection names, outcomes, results, version, le: nothing else can become a label."""
    metrics.fetch_requests_total.labels("home", "throttled").inc()
    metrics.tasks_finished_total.labels("codeberg", "cancelled").inc()
    for s in samples(metrics):
        assert set(s.labels) <= {"connection", "outcome", "result", "version", "le"}, s
        assert s.labels.get("connection", "home") in {"home", "codeberg"}
        for label, allowed in ENUM_LABEL_VALUES.items():
            if label in s.labels:
                assert s.labels[label] in allowed, s


def test_no_connections_means_only_the_global_series() -> None:
    m = Metrics(capacity=3, connections=[], version="0")
    assert all("connection" not in s.labels for s in samples(m))
    assert value(m, "capacity_slots") == 3


# --- add_connection / remove_connection ----------------------------------------------


def test_add_connection_is_idempotent_and_only_updates_config(metrics: Metrics) -> None:
    metrics.tasks_received_total.labels("home").inc(4)
    metrics.slots_held.labels("home").set(2)
    metrics.add_connection("home", Share(2.5, 1, 3))
    metrics.add_connection("home", Share(2.5, 1, 3))
    assert value(metrics, "tasks_received_total", connection="home") == 4
    assert value(metrics, "slots_held", connection="home") == 2
    assert value(metrics, "connection_weight", connection="home") == 2.5
    assert value(metrics, "connection_min_slots", connection="home") == 1
    assert value(metrics, "connection_max_slots", connection="home") == 3
    # exactly one series per (family, label set): nothing was duplicated
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples(metrics)]
    assert len(keys) == len(set(keys))


def test_add_connection_later_creates_its_series_at_zero(metrics: Metrics) -> None:
    before = len(connection_samples(metrics, "home"))
    metrics.add_connection("late", Share(1, 0, 6))
    assert len(connection_samples(metrics, "late")) == before
    assert value(metrics, "fetch_requests_total", connection="late", outcome="unauthorized") == 0
    assert value(metrics, "connection_up", connection="late") == 0


def test_remove_connection_drops_every_series_of_that_connection_only(metrics: Metrics) -> None:
    home_before = connection_samples(metrics, "home")
    metrics.fetch_requests_total.labels("codeberg", "error").inc()
    metrics.task_duration_seconds.labels("codeberg").observe(12)
    metrics.remove_connection("codeberg")
    assert connection_samples(metrics, "codeberg") == []
    assert connection_samples(metrics, "home") == home_before
    assert metrics.connections == {"home"}
    metrics.remove_connection("codeberg")  # again: no-op
    metrics.remove_connection("never-existed")
    # and back, from zero (a reload that re-adds it starts fresh)
    metrics.add_connection("codeberg", Share(1, 0, 6))
    assert value(metrics, "fetch_requests_total", connection="codeberg", outcome="error") == 0
    assert value(metrics, "task_duration_seconds_count", connection="codeberg") == 0


def test_updates_show_up_in_the_exposition(metrics: Metrics) -> None:
    metrics.slots_held.labels("home").set(3)
    metrics.fetch_duration_seconds.labels("home").observe(0.2)
    metrics.tasks_finished_total.labels("home", "success").inc()
    assert value(metrics, "slots_held", connection="home") == 3
    assert value(metrics, "fetch_duration_seconds_count", connection="home") == 1
    assert value(metrics, "fetch_duration_seconds_bucket", connection="home", le="0.25") == 1
    assert value(metrics, "fetch_duration_seconds_bucket", connection="home", le="0.1") == 0
    assert value(metrics, "tasks_finished_total", connection="home", result="success") == 1


def test_docs_describe_every_metric(metrics: Metrics) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    for f in parse(scrape(metrics)):
        exported = f.name + ("_total" if f.type == "counter" else "")
        assert f"`{exported}`" in doc, f"docs/metrics.md does not describe {exported}"


# --- the Grafana dashboard -------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def all_panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows nest their panels


def exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in all_panels(doc) for t in p.get("targets", [])]


def test_dashboard_only_uses_metrics_that_exist(metrics: Metrics) -> None:
    doc = dashboard()
    exported = {s.name for s in samples(metrics)}
    texts = exprs(doc) + [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    used = {n for t in texts for n in re.findall(r"\bforgejo_scheduler_[a-z0-9_]+", t)}
    assert used, "no metric found in the dashboard's expressions"
    assert used <= exported, f"dashboard uses unknown metrics: {sorted(used - exported)}"
    # and it covers the operational families (config gauges are documented, not graphed)
    graphed = {re.sub(r"_(bucket|sum|count|total)$", "", n.removeprefix(PREFIX)) for n in used}
    config_gauges = {"connection_weight", "connection_min_slots", "connection_max_slots"}
    assert PER_CONNECTION - config_gauges <= graphed, sorted(PER_CONNECTION - graphed)


def test_dashboard_filters_per_connection_series_by_the_connection_variable() -> None:
    per_conn = {f"forgejo_scheduler_{n}" for n in PER_CONNECTION}
    for expr in exprs(dashboard()):
        for m in re.finditer(r"\b(forgejo_scheduler_[a-z0-9_]+)", expr):
            base = re.sub(r"_(bucket|sum|count|total)$", "", m.group(1))
            if base in per_conn or m.group(1) in per_conn:
                assert expr[m.end() :].startswith('{connection=~"$connection"'), expr


def test_dashboard_shape_datasource_variable_and_schema() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] == 41  # grafana-foundation-sdk 11.6: Grafana 11.6 or later
    assert doc["uid"] == "forgejo-scheduler"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    conn = variables["connection"]
    assert conn["multi"] is True and conn["includeAll"] is True
    assert conn["query"] == "label_values(forgejo_scheduler_slots_held, connection)"
    for p in all_panels(doc):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Capacity and fairness", "Fetch", "Tasks", "Health"]
    ids = [p["id"] for p in all_panels(doc)]
    assert len(ids) == len(set(ids))
    for e in exprs(doc):
        assert "[$__rate_interval]" in e or "rate(" not in e, e


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", ROOT / "grafana" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_what_the_generator_produces() -> None:
    generated = _load_generator().render()
    assert DASHBOARD.read_text(encoding="utf-8") == generated, (
        "grafana/dashboard.json is stale: run python grafana/generate.py"
    )


def test_connection_children_write_the_connection_series(metrics: Metrics) -> None:
    home = metrics.connection("home")
    assert metrics.add_connection("home", Share(1, 0, 6)) is home  # created once
    home.fetch_retries.inc(2)
    home.fetch_requests["throttled"].inc()
    home.tasks_finished["skipped"].inc()
    home.slots_held.set(3)
    assert value(metrics, "fetch_retries_total", connection="home") == 2
    assert value(metrics, "fetch_requests_total", connection="home", outcome="throttled") == 1
    assert value(metrics, "tasks_finished_total", connection="home", result="skipped") == 1
    assert value(metrics, "slots_held", connection="home") == 3
    assert value(metrics, "slots_held", connection="codeberg") == 0
    assert set(home.fetch_requests) == set(FETCH_OUTCOMES)
    assert set(home.tasks_finished) == set(TASK_RESULTS)
    # one child per per-connection family: none is left to a .labels() call site
    families = {s.name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
                .removesuffix("_bucket") for s in connection_samples(metrics, "home")}
    children = len(attrs.fields(type(home)))
    assert len(families) == children == 22
    metrics.remove_connection("home")
    with pytest.raises(KeyError):
        metrics.connection("home")
