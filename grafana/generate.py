"""Generate ``grafana/dashboard.json`` for forgejo-scheduler.

Why a script: a dashboard is ~1000 lines of JSON that nobody reviews; the handful of
PromQL expressions and the layout below are what matters, and a diff of this file
says what changed. The JSON is committed so that operators need no Python to import
it; ``tests/test_metrics.py`` fails when the two drift apart, or when an expression
names a metric ``scheduler.metrics.Metrics`` does not export.

Plain dicts, no SDK: grafana-foundation-sdk would be one more dependency for a file
that changes rarely, and the schema subset used here (rows, timeseries, stat,
state-timeline; schemaVersion 39) is stable.

Usage::

    python grafana/generate.py            # rewrite grafana/dashboard.json
    python grafana/generate.py --check    # exit 1 if the committed JSON is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboard.json"

UID = "forgejo-scheduler"
SCHEMA_VERSION = 39
P = "forgejo_scheduler_"
DS = {"type": "prometheus", "uid": "${datasource}"}
CONN = 'connection=~"$connection"'

Panel = dict[str, Any]


def sel(metric: str) -> str:
    """A per-connection series selector restricted to the dashboard's connection picker."""
    return f"{P}{metric}{{{CONN}}}"


def rate(metric: str) -> str:
    return f"rate({sel(metric)}[$__rate_interval])"


def quantile(q: float, metric: str) -> str:
    """Quantile per connection from a classic histogram (buckets summed over instances)."""
    return f"histogram_quantile({q}, sum by (connection, le) ({rate(metric + '_bucket')}))"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(pairs)]


def timeseries(
    title: str,
    description: str,
    exprs: list[dict[str, Any]],
    *,
    unit: str = "short",
    stacked: bool = False,
    min_: float | None = 0,
    max_: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
    draw: str = "line",
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": draw,
            "lineWidth": 1,
            "fillOpacity": 20 if stacked or draw == "bars" else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        },
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": exprs,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def dashed(regex: str) -> dict[str, Any]:
    """Override: series whose name matches ``regex`` drawn dashed (targets, not actuals)."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


def color(name: str, c: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def capacity_row() -> list[Panel]:
    return [
        row("Capacity"),
        timeseries(
            "Capacity vs slots held",
            "Configured slots against slots held (running + reserved). Reserved slots "
            "belong to fetches whose answer is not known yet; they stay reserved until "
            "the request key resolves, so held never exceeds capacity.",
            targets(
                (f"sum({P}capacity_slots)", "capacity"),
                (f"sum({sel('slots_held')})", "held"),
                (f"sum({sel('slots_reserved')})", "reserved (fetch in doubt)"),
            ),
            overrides=[dashed("capacity")],
        ),
        timeseries(
            "Slots held per connection",
            "Running plus reserved slots, stacked: who is using the pool.",
            targets((f"sum by (connection) ({sel('slots_held')})", "{{connection}}")),
            stacked=True,
        ),
        timeseries(
            "Fair share vs held",
            "Dashed: the weighted max-min share computed for each connection; solid: "
            "what it holds. Without preemption a connection above its share converges "
            "only as its jobs finish.",
            targets(
                (f"sum by (connection) ({sel('slots_held')})", "{{connection}} held"),
                (f"sum by (connection) ({sel('fair_share_slots')})", "{{connection}} fair share"),
            ),
            overrides=[dashed(".* fair share")],
        ),
        timeseries(
            "Jain fairness index",
            "Jain's index over hungry connections, weighted by fair share: 1 is "
            "perfectly fair, 1/n is one connection taking everything.",
            targets((f"min({P}fairness_jain_index)", "Jain index")),
            unit="none",
            max_=1,
        ),
    ]


def fetch_row() -> list[Panel]:
    return [
        row("Fetch"),
        timeseries(
            "Fetch requests/s by outcome",
            "FetchTask calls per second. 'error', 'timeout', 'unauthorized' and "
            "'throttled' are failures; 'empty' is a healthy idle poll.",
            targets(
                (f"sum by (outcome) ({rate('fetch_requests_total')})", "{{outcome}}"),
            ),
            unit="reqps",
            stacked=True,
            overrides=[
                color("tasks", "green"),
                color("empty", "blue"),
                color("error", "red"),
                color("timeout", "orange"),
                color("unauthorized", "purple"),
                color("throttled", "yellow"),
            ],
        ),
        timeseries(
            "Fetch duration p50 / p99",
            "Round-trip time of FetchTask per connection (from the histogram).",
            targets(
                (quantile(0.5, "fetch_duration_seconds"), "{{connection}} p50"),
                (quantile(0.99, "fetch_duration_seconds"), "{{connection}} p99"),
            ),
            unit="s",
            overrides=[dashed(".* p99")],
        ),
        timeseries(
            "Fetch retries and reused request keys",
            "Retries of an in-doubt fetch with the same request key. Sustained retries "
            "mean a server that answers slowly or not at all.",
            targets(
                (f"sum by (connection) ({rate('fetch_retries_total')})", "{{connection}} retries"),
                (
                    f"sum by (connection) ({rate('request_keys_reused_total')})",
                    "{{connection}} reused keys",
                ),
            ),
            unit="ops",
        ),
        timeseries(
            "Request key rotations",
            "A key is rotated after every definite answer; this tracks successful fetches.",
            targets(
                (
                    f"sum by (connection) ({rate('request_key_rotations_total')})",
                    "{{connection}}",
                ),
            ),
            unit="ops",
        ),
    ]


def tasks_row() -> list[Panel]:
    return [
        row("Tasks"),
        timeseries(
            "Tasks running per connection",
            "Tasks executing now, stacked.",
            targets((f"sum by (connection) ({sel('tasks_running')})", "{{connection}}")),
            stacked=True,
        ),
        timeseries(
            "Tasks finished by result (per minute)",
            "Final results reported, stacked by result; the dashed line is tasks received.",
            targets(
                (f"sum by (result) (60 * {rate('tasks_finished_total')})", "{{result}}"),
                (f"sum(60 * {rate('tasks_received_total')})", "received"),
            ),
            unit="opm",
            stacked=True,
            overrides=[
                color("success", "green"),
                color("failure", "red"),
                color("cancelled", "orange"),
                color("skipped", "blue"),
                color("unknown", "purple"),
                {
                    "matcher": {"id": "byName", "options": "received"},
                    "properties": [
                        {"id": "custom.stacking", "value": {"mode": "none", "group": "B"}},
                        {"id": "custom.fillOpacity", "value": 0},
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "text"}},
                    ],
                },
            ],
        ),
        timeseries(
            "Task duration p50 / p95",
            "Wall-clock task duration per connection (from the histogram).",
            targets(
                (quantile(0.5, "task_duration_seconds"), "{{connection}} p50"),
                (quantile(0.95, "task_duration_seconds"), "{{connection}} p95"),
            ),
            unit="s",
            overrides=[dashed(".* p95")],
        ),
        timeseries(
            "Recovered and rejected tasks",
            "Recovered: tasks that arrived on a retried request key (an in-doubt fetch "
            "that did assign work). Rejected: tasks beyond the reserved slots, reported "
            "failed at once. Both should be rare; rejected should be zero.",
            targets(
                (
                    f"sum by (connection) (increase({sel('tasks_recovered_total')}"
                    "[$__rate_interval]))",
                    "{{connection}} recovered",
                ),
                (
                    f"sum by (connection) (increase({sel('tasks_rejected_total')}"
                    "[$__rate_interval]))",
                    "{{connection}} rejected",
                ),
            ),
            draw="bars",
        ),
    ]


def health_row() -> list[Panel]:
    up = {
        "type": "state-timeline",
        "title": "Connection up",
        "description": "1 when the last exchange with that Forgejo succeeded. A down "
        "connection does not fail the liveness probe: the others keep working.",
        "datasource": DS,
        "targets": targets((f"max by (connection) ({sel('connection_up')})", "{{connection}}")),
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "down", "color": "red", "index": 0},
                            "1": {"text": "up", "color": "green", "index": 1},
                        },
                    }
                ],
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }
    since = timeseries(
        "Time since last successful fetch",
        "Seconds since FetchTask last got an answer (tasks or empty). Connections that "
        "never fetched are not drawn.",
        targets(
            (
                f"time() - max by (connection) "
                f"({sel('last_successful_fetch_timestamp_seconds')} > 0)",
                "{{connection}}",
            )
        ),
        unit="s",
    )
    since["fieldConfig"]["defaults"]["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 300}],
    }
    since["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line"}
    return [
        row("Health"),
        up,
        since,
        timeseries(
            "Slot wait p50 / p99",
            "Time from a connection becoming hungry to being granted a slot. Long waits "
            "with free capacity would be a scheduler bug; with a full pool they are the "
            "queue.",
            targets(
                (quantile(0.5, "slot_wait_seconds"), "{{connection}} p50"),
                (quantile(0.99, "slot_wait_seconds"), "{{connection}} p99"),
            ),
            unit="s",
            overrides=[dashed(".* p99")],
        ),
        {
            "type": "stat",
            "title": "Versions running",
            "description": "Instances per build version (forgejo_scheduler_build_info).",
            "datasource": DS,
            "targets": targets((f"count by (version) ({P}build_info)", "{{version}}")),
            "fieldConfig": {"defaults": {"unit": "short", "color": {"mode": "fixed"}}},
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name",
                "colorMode": "none",
                "graphMode": "none",
            },
        },
    ]


def layout(panels: list[Panel]) -> list[Panel]:
    """Assign ids and a grid: each row header full width, then two panels per line."""
    y, x, pid = 0, 0, 1
    out = []
    for p in panels:
        p = {"id": pid, **p}
        pid += 1
        if p["type"] == "row":
            if x:
                y, x = y + 8, 0
            p["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            p["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            x += 12
            if x >= 24:
                y, x = y + 8, 0
        out.append(p)
    return out


def templating() -> dict[str, Any]:
    query = f"label_values({P}slots_held, connection)"
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            {
                "name": "connection",
                "label": "Connection",
                "type": "query",
                "datasource": DS,
                "definition": query,
                "query": query,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "options": [],
                "refresh": 2,
                "regex": "",
                "sort": 1,
            },
        ]
    }


def build() -> dict[str, Any]:
    """The whole dashboard as a dict (``json.dumps`` of it is ``dashboard.json``)."""
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "forgejo-scheduler: slots, fairness, fetches and tasks per "
        "Forgejo connection. Generated by grafana/generate.py; do not edit by hand.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(capacity_row() + fetch_row() + tasks_row() + health_row()),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["forgejo", "forgejo-scheduler", "ci"],
        "templating": templating(),
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "Forgejo scheduler",
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if dashboard.json is stale")
    parser.add_argument("--output", type=Path, default=OUT, help="where to write the JSON")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
