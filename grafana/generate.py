"""Generate ``grafana/dashboard.json`` for forgejo-scheduler with grafana-foundation-sdk.

Why a script: a dashboard is ~1500 lines of JSON that nobody reviews; the PromQL
expressions and the layout below are what matters, and a diff of this file says what
changed. The JSON is committed so that operators need no Python to import it;
``tests/test_grafana.py`` fails when the two drift apart, when an expression names a
metric ``scheduler.metrics.Metrics`` does not export, or when a metric is not graphed;
``tests/test_prometheus_live.py`` sends every expression to a real Prometheus.

Why grafana-foundation-sdk (Grafana's own generated builders, pinned to the 11.6
schema): panel, field-config and query types are checked by mypy instead of being
dicts that Grafana silently ignores when a key is misspelt. It is a development
dependency only (the ``test`` extra); the service never imports it.

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

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

OUT = Path(__file__).resolve().parent / "dashboard.json"

UID = "forgejo-scheduler"
P = "forgejo_scheduler_"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
CONN = 'connection=~"$connection"'
HEIGHT, HALF = 8, 12
DASH = {"fill": "dash", "dash": [10, 10]}

Panel = timeseries.Panel | statetimeline.Panel | stat.Panel


# --- PromQL --------------------------------------------------------------------------


def sel(metric: str) -> str:
    """A per-connection series selector restricted to the dashboard's connection picker."""
    return f"{P}{metric}{{{CONN}}}"


def rate(metric: str) -> str:
    return f"rate({sel(metric)}[$__rate_interval])"


def by_conn(expr: str) -> str:
    return f"sum by (connection) ({expr})"


def quantile(q: float, metric: str) -> str:
    """Quantile per connection from a classic histogram (buckets summed over instances)."""
    return f"histogram_quantile({q}, sum by (connection, le) ({rate(metric + '_bucket')}))"


def jain_30m() -> str:
    """Jain's index over each connection's held ÷ fair share, both averaged over 30 min.

    The same as the recording rule instance:forgejo_scheduler_fairness_jain_index:avg30m
    (prometheus/rules/), written out so that the dashboard needs no rules loaded.
    """
    ratio = (
        f"(avg_over_time({sel('slots_held')}[30m]) "
        f"/ (avg_over_time({sel('fair_share_slots')}[30m]) > 0))"
    )
    return f"sum({ratio}) ^ 2 / (count({ratio}) * sum({ratio} ^ 2))"


def query(expr: str, legend: str, ref: str) -> pb.Dataquery:
    return pb.Dataquery().expr(expr).legend_format(legend).range().ref_id(ref).datasource(DS)


def queries(*pairs: tuple[str, str]) -> list[Builder[Dataquery]]:
    return [query(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(pairs)]


# --- panel kinds -------------------------------------------------------------------


def graph(
    title: str,
    description: str,
    *pairs: tuple[str, str],
    unit: str = "short",
    stacked: bool = False,
    max_: float | None = None,
    bars: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(queries(*pairs))
        .unit(unit)
        .min(0)
        .height(HEIGHT)
        .span(HALF)
        .color_scheme(cb_color("palette-classic"))
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if stacked or bars else 0)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            cb.StackingConfig()
            .mode(cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE)
            .group("A")
        )
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )
    if max_ is not None:
        panel = panel.max(max_)
    return panel


def cb_color(mode: str, fixed: str | None = None) -> db.FieldColor:
    color = db.FieldColor().mode(dm.FieldColorModeId(mode))
    return color.fixed_color(fixed) if fixed else color


def dashed(panel: timeseries.Panel, regex: str) -> timeseries.Panel:
    """Series whose name matches ``regex`` drawn dashed (targets and thresholds, not actuals)."""
    return panel.override_by_regexp(
        regex,
        [
            dm.DynamicConfigValue(id_val="custom.lineStyle", value=DASH),
            dm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        ],
    )


def colored(panel: timeseries.Panel, colors: dict[str, str]) -> timeseries.Panel:
    for name, c in colors.items():
        panel = panel.override_by_name(
            name, [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": c})]
        )
    return panel


def red_above(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    """A red threshold line: the level an alert rule in prometheus/rules/ uses."""
    return panel.thresholds(
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(color="green", value=None), dm.Threshold(color="red", value=value)])
    ).thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE))


# --- rows ----------------------------------------------------------------------------


def capacity_row() -> list[Panel]:
    return [
        dashed(
            graph(
                "Capacity vs slots held",
                "Configured slots against slots held (running + reserved). Reserved slots "
                "belong to fetches whose answer is not known yet; they stay reserved until "
                "the request key resolves, so held never exceeds capacity.",
                (f"sum({P}capacity_slots)", "capacity"),
                (f"sum({sel('slots_held')})", "held"),
                (f"sum({sel('slots_reserved')})", "reserved (fetch in doubt)"),
            ),
            "capacity",
        ),
        graph(
            "Capacity utilisation",
            "Share of all slots used by the selected connections: held (running + "
            "reserved) and running tasks only. Near 100 % with connections waiting for a "
            "slot means the pool is too small for the demand.",
            (f"sum({sel('slots_held')}) / sum({P}capacity_slots)", "held"),
            (f"sum({sel('tasks_running')}) / sum({P}capacity_slots)", "running"),
            unit="percentunit",
            max_=1,
        ),
        dashed(
            graph(
                "Slots held vs fair share per connection",
                "Dashed: the weighted max-min share computed for each connection; solid: "
                "what it holds. Without preemption a connection above its share converges "
                "only as its jobs finish.",
                (by_conn(sel("slots_held")), "{{connection}} held"),
                (by_conn(sel("fair_share_slots")), "{{connection}} fair share"),
            ),
            ".* fair share",
        ),
        red_above(
            graph(
                "Jain fairness index",
                "Jain's index of held ÷ fair share over the connections with demand: 1 is "
                "perfectly fair, 1/n is one connection taking everything. 'now' is the "
                "service's gauge: slots are whole, so with fewer slots than busy connections "
                "it is low even when they take turns perfectly. '30m' averages held and "
                "share per connection over 30 minutes first; the ForgejoSchedulerFairnessLow "
                "alert uses it, at the red line.",
                (f"min({P}fairness_jain_index)", "now"),
                (jain_30m(), "30m"),
                unit="none",
                max_=1,
            ),
            0.8,
        ),
        graph(
            "Connections waiting for a slot",
            "1 while a connection wants a slot to fetch with and none is free: the demand "
            "the pool cannot serve now. Stacked, so the height is how many wait.",
            (by_conn(sel("connection_waiting_for_slot")), "{{connection}}"),
            stacked=True,
        ),
        dashed(
            graph(
                "Slot wait p50 / p95",
                "Time from a connection becoming hungry to being granted a slot. Long waits "
                "with free capacity would be a scheduler bug; with a full pool they are the "
                "queue.",
                (quantile(0.5, "slot_wait_seconds"), "{{connection}} p50"),
                (quantile(0.95, "slot_wait_seconds"), "{{connection}} p95"),
                unit="s",
            ),
            ".* p95",
        ),
    ]


def fetch_row() -> list[Panel]:
    return [
        colored(
            graph(
                "FetchTask requests/s by outcome",
                "FetchTask calls per second. 'error', 'timeout', 'unauthorized' and "
                "'throttled' are failures; 'empty' is a healthy idle poll.",
                (f"sum by (outcome) ({rate('fetch_requests_total')})", "{{outcome}}"),
                unit="reqps",
                stacked=True,
            ),
            {
                "tasks": "green",
                "empty": "blue",
                "error": "red",
                "timeout": "orange",
                "unauthorized": "purple",
                "throttled": "yellow",
            },
        ),
        dashed(
            graph(
                "FetchTask duration p50 / p99",
                "Round-trip time of FetchTask per connection (from the histogram).",
                (quantile(0.5, "fetch_duration_seconds"), "{{connection}} p50"),
                (quantile(0.99, "fetch_duration_seconds"), "{{connection}} p99"),
                unit="s",
            ),
            ".* p99",
        ),
        graph(
            "Fetch retries and reused request keys",
            "Retries of an in-doubt fetch with the same request key. Sustained retries "
            "mean a server that answers slowly or not at all.",
            (by_conn(rate("fetch_retries_total")), "{{connection}} retries"),
            (by_conn(rate("request_keys_reused_total")), "{{connection}} reused keys"),
            unit="ops",
        ),
        red_above(
            graph(
                "Age of the unresolved request key",
                "How long each connection's current request key has been in doubt (its "
                "slots stay reserved meanwhile). Connections with no key in doubt are not "
                "drawn. The red line is the ForgejoSchedulerRequestKeyUnresolved alert.",
                (
                    "time() - max by (connection) "
                    f"({sel('request_key_unresolved_since_timestamp_seconds')} > 0)",
                    "{{connection}}",
                ),
                unit="s",
            ),
            600,
        ),
        graph(
            "Request key rotations",
            "A key is rotated after every definite answer; this tracks successful fetches.",
            (by_conn(rate("request_key_rotations_total")), "{{connection}}"),
            unit="ops",
        ),
    ]


def tasks_row() -> list[Panel]:
    finished = colored(
        graph(
            "Tasks finished by result (per minute)",
            "Final results reported, stacked by result; the dashed line is tasks received.",
            (f"sum by (result) (60 * {rate('tasks_finished_total')})", "{{result}}"),
            (f"sum(60 * {rate('tasks_received_total')})", "received"),
            unit="opm",
            stacked=True,
        ),
        {
            "success": "green",
            "failure": "red",
            "cancelled": "orange",
            "skipped": "blue",
            "unknown": "purple",
        },
    ).override_by_name(
        "received",
        [
            dm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "B"}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            dm.DynamicConfigValue(id_val="custom.lineStyle", value=DASH),
            dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "text"}),
        ],
    )
    return [
        graph(
            "Tasks running per connection",
            "Tasks executing now, stacked.",
            (by_conn(sel("tasks_running")), "{{connection}}"),
            stacked=True,
        ),
        finished,
        dashed(
            graph(
                "Task duration p50 / p95",
                "Wall-clock task duration per connection (from the histogram).",
                (quantile(0.5, "task_duration_seconds"), "{{connection}} p50"),
                (quantile(0.95, "task_duration_seconds"), "{{connection}} p95"),
                unit="s",
            ),
            ".* p95",
        ),
        graph(
            "Recovered and rejected tasks",
            "Recovered: tasks that arrived on a retried request key (an in-doubt fetch "
            "that did assign work: without the retry they would be lost). Rejected: tasks "
            "beyond the reserved slots, reported failed at once; should stay zero.",
            (
                by_conn(f"increase({sel('tasks_recovered_total')}[$__rate_interval])"),
                "{{connection}} recovered",
            ),
            (
                by_conn(f"increase({sel('tasks_rejected_total')}[$__rate_interval])"),
                "{{connection}} rejected",
            ),
            bars=True,
        ),
    ]


def health_row() -> list[Panel]:
    up = (
        statetimeline.Panel()
        .title("Connection up")
        .description(
            "1 when the last exchange with that Forgejo succeeded. A down connection does "
            "not fail the liveness probe: the others keep working."
        )
        .datasource(DS)
        .targets(queries((f"max by (connection) ({sel('connection_up')})", "{{connection}}")))
        .height(HEIGHT)
        .span(HALF)
        .color_scheme(cb_color("thresholds"))
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(color="red", value=None), dm.Threshold(color="green", value=1)])
        )
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "0": dm.ValueMappingResult(text="down", color="red", index=0),
                        "1": dm.ValueMappingResult(text="up", color="green", index=1),
                    }
                )
            ]
        )
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).show_legend(False))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE))
    )
    since = red_above(
        graph(
            "Time since last successful fetch",
            "Seconds since FetchTask last got an answer (tasks or empty). Connections that "
            "never fetched are not drawn.",
            (
                "time() - max by (connection) "
                f"({sel('last_successful_fetch_timestamp_seconds')} > 0)",
                "{{connection}}",
            ),
            unit="s",
        ),
        300,
    )
    versions = (
        stat.Panel()
        .title("Versions running")
        .description("Instances per build version (forgejo_scheduler_build_info).")
        .datasource(DS)
        .targets(queries((f"count by (version) ({P}build_info)", "{{version}}")))
        .height(HEIGHT)
        .span(HALF)
        .unit("short")
        .color_scheme(cb_color("fixed"))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.NONE)
        .graph_mode(cm.BigValueGraphMode.NONE)
    )
    return [up, since, versions]


# --- the dashboard -------------------------------------------------------------------


def variables() -> list[db.DatasourceVariable | db.QueryVariable]:
    values = f"label_values({P}slots_held, connection)"
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        db.QueryVariable("connection")
        .label("Connection")
        .datasource(DS)
        .query(values)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC),
    ]


ROWS = (
    ("Capacity and fairness", capacity_row),
    ("Fetch", fetch_row),
    ("Tasks", tasks_row),
    ("Health", health_row),
)


def build() -> db.Dashboard:
    dash = (
        db.Dashboard("Forgejo scheduler")
        .uid(UID)
        .description(
            "forgejo-scheduler: slots, fairness, fetches and tasks per Forgejo connection. "
            "Generated by grafana/generate.py; do not edit by hand."
        )
        .tags(["forgejo", "forgejo-scheduler", "ci"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(variables())  # type: ignore[arg-type]
    )
    for title, panels in ROWS:
        dash = dash.with_row(db.Row(title))
        for panel in panels():
            dash = dash.with_panel(panel)
    return dash


def as_dict() -> dict[str, Any]:
    """The dashboard as plain JSON data, with panel ids assigned in layout order."""
    data: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    for pid, panel in enumerate(data["panels"], start=1):
        panel["id"] = pid
    return data


def render() -> str:
    return json.dumps(as_dict(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


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
