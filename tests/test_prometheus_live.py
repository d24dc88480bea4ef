"""Every PromQL expression of the dashboard and of the rules, on a real Prometheus.

A real ``forgejo-scheduler sim`` (three simulated Forgejos, some FetchTask answers
dropped after assignment) and a real ``forgejo-scheduler run`` (capacity 2, so
connections compete; plus a fourth connection, ``refused``, to a loopback port where
nothing listens) run as child processes; the metrics listen on a free loopback
port. Debian's ``prometheus`` scrapes them every second on its own loopback port, with
the rules of ``prometheus/rules/`` loaded and evaluated every second. Then:

* Dashboard: every ``expr`` in ``grafana/dashboard.json`` (read at test time, whatever
  the generator wrote) and every templating query (``label_values`` through
  ``/api/v1/label/<name>/values``). Grafana variables are substituted: built-ins like
  ``$__rate_interval`` with fixed durations (:data:`BUILTINS`), dashboard variables with
  their "All" value, and a second time with one real value (regex-escaped). A ``$`` left
  over fails the test, so a new variable must be taught here.
* Rules: every ``expr`` of ``prometheus/rules/*.yml``, and Prometheus' own view of the
  loaded rules (``/api/v1/rules``): each must have evaluated with health ``ok``.

An expression must parse (Prometheus answers ``success``) and return at least one series.
Threshold comparisons are legitimately empty on a healthy service (no alert fires; the
dashboard's "age of the unresolved key" is ``x > 0``). For an empty answer the test runs
the expression *relaxed*: every comparison operator gets the ``bool`` modifier
(``a > 0`` becomes ``a > bool 0``), which keeps every selector, function, aggregation and
vector matching (``on``, ``and``) and drops only the filtering, so it must return series.
That proves the whole expression, both sides of each ``and``/``/``, connects to real
series. Independently of the answer, every vector selector in the expression (metric
name plus matchers) is queried alone and must return series, and every label named in
``by``/``without``/``on``/``ignoring``/``group_*`` or a matcher must exist on those series
(so an ``or`` or a renamed label cannot hide a missing metric).

The counts are printed; with ``PROMETHEUS_LIVE_TABLE=path`` they are also written to that
file (``scripts/prometheus-live-check.py`` writes ``docs/prometheus-live-check.txt``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboard.json"
RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
CLI = [sys.executable, "-m", "scheduler"]
JOB = "forgejo-scheduler"  # the job name ForgejoSchedulerScrapeDown matches

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed: run scripts/install-test-tools.sh "
    "(Debian package prometheus)",
)

#: Grafana's built-in variables, with what the test puts in their place. The scrape
#: interval is 1 s, so a 1 m rate window holds many samples (Grafana's own
#: $__rate_interval would be max(4 x scrape interval, $__interval + scrape interval)).
BUILTINS = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "__auto": "15s",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)(?::[\w]+)?\]\]|\$(\w+)")

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], within: float = 30) -> T:
    """Poll ``probe`` until it returns something not None, or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
    """Send each signal in turn, 5 s apart, until the process exits; then SIGKILL."""
    for signum in signals:
        if proc.poll() is not None:
            return
        proc.send_signal(signum)
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(10)


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# --- the service ------------------------------------------------------------------------


@attrs.frozen
class Service:
    metrics_port: int
    connections: tuple[str, ...]


#: The connection whose server refuses every connection: down, and the alert pending.
REFUSED = "refused"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    names = ("alpha", "beta", "gamma")
    sim_log = tmp_path / "sim.log"
    config = tmp_path / "config.toml"
    with sim_log.open("wb") as out:
        sim = subprocess.Popen(
            [*CLI, "sim", "--listen", "127.0.0.1:0", "--instances", ",".join(names),
             "--seed", "7", "--rate", "1", "--duration-range", "0.2,2",
             "--drop-after-assign", "0.1", "--summary-interval", "3600",
             "--write-config", str(config), "--capacity", "2", "--fetch-interval", "0.5s"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    daemon: subprocess.Popen[bytes] | None = None
    try:
        wait_until(
            "the simulator's config",
            lambda: True if b"runner config written" in sim_log.read_bytes() else None,
        )
        with config.open("a") as fh:  # nothing listens on that port: refused
            fh.write(f'\n[connections.{REFUSED}]\nurl = "http://127.0.0.1:{free_port()}"\n'
                     f'uuid = "uuid-{REFUSED}"\ntoken = "{"0" * 40}"\n')
        run_log = tmp_path / "run.log"
        with run_log.open("wb") as out:
            daemon = subprocess.Popen(
                [*CLI, "run", "--config", str(config)], cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

        def metrics_port() -> int | None:
            assert daemon is not None
            if daemon.poll() is not None:
                pytest.fail(f"forgejo-scheduler run exited: {tail(run_log)}")
            m = re.search(rb"http://127\.0\.0\.1:(\d+)/metrics", run_log.read_bytes())
            return int(m.group(1)) if m else None

        yield Service(wait_until("the daemon's metrics address", metrics_port),
                      (*names, REFUSED))
    finally:
        if daemon is not None:
            # SIGTERM lets running tasks finish; a second one cancels them at once.
            stop(daemon, (signal.SIGTERM, signal.SIGTERM))
        stop(sim)


# --- Prometheus -------------------------------------------------------------------------


@attrs.frozen
class Prometheus:
    url: str
    client: httpx.Client
    version: str

    def api(self, path: str, **params: Any) -> Any:
        r = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result as a list of series (a scalar counts as one)."""
        r = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            error = f"{body.get('errorType')}: {body.get('error')}"
            pytest.fail(f"Prometheus refused {expr!r}: {error}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])


def prometheus_config(path: Path, target: str) -> Path:
    doc = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULES],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def prometheus(tmp_path: Path, service: Service) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    config = prometheus_config(tmp_path / "prometheus.yml", f"127.0.0.1:{service.metrics_port}")
    version = subprocess.run(
        [PROMETHEUS, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    log = tmp_path / "prometheus.log"
    client = httpx.Client(timeout=10)
    try:
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = free_port()
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={config}",
                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}"
                if wait_until("Prometheus to be ready", partial(_ready, proc, client, url)):
                    yield Prometheus(url, client, version)
                    return
            finally:
                stop(proc)
        pytest.fail(f"prometheus did not start: {tail(log)}")
    finally:
        client.close()


def _ready(proc: subprocess.Popen[bytes], client: httpx.Client, url: str) -> bool | None:
    """False once the process has exited (port taken?), True once it answers ready."""
    if proc.poll() is not None:
        return False
    try:
        return True if client.get(f"{url}/-/ready").status_code == 200 else None
    except httpx.TransportError:
        return None


def wait_for_data(prom: Prometheus) -> None:
    """Two scrapes of the service, and two evaluations of every rule, all healthy."""

    def scraped() -> bool | None:
        targets = prom.api("targets", state="active")["activeTargets"]
        ours = [t for t in targets if t["labels"].get("job") == JOB]
        if not ours or ours[0]["health"] != "up":
            return None
        got = prom.query(f'count_over_time(up{{job="{JOB}"}}[1m])')
        return True if got and float(got[0]["value"][1]) >= 2 else None

    def rules_evaluated() -> bool | None:
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if not rules or any(r.get("health") != "ok" for r in rules):
            return None
        records = [r["name"] for r in rules if r["type"] == "recording"]
        for name in records:
            got = prom.query(f"count_over_time({name}[1m])")
            if not got or float(got[0]["value"][1]) < 2:
                return None
        return True

    wait_until("two scrapes of the service", scraped)
    wait_until("every rule evaluated twice, healthy", rules_evaluated)


# --- the expressions --------------------------------------------------------------------


@attrs.frozen
class Query:
    source: str  # "dashboard <panel title>", "variable <name>", "rule <name>"
    expr: str  # as written, with Grafana variables


def dashboard_queries(doc: dict[str, Any]) -> tuple[list[Query], list[dict[str, Any]]]:
    """Every target ``expr`` (panels at any depth, rows included) and the variables."""
    found: list[Query] = []

    def walk(node: Any, title: str) -> None:
        if isinstance(node, dict):
            title = str(node.get("title", title))
            for target in node.get("targets", []) or []:
                if isinstance(target, dict) and "expr" in target:
                    found.append(Query(f"dashboard: {title}", str(target["expr"])))
            for key, value in node.items():
                if key not in ("targets", "templating"):
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, title)

    walk(doc, "")
    variables = list(doc.get("templating", {}).get("list", []))
    return found, variables


def rule_queries() -> list[Query]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                kind = "alert" if "alert" in rule else "record"
                found.append(Query(f"{kind}: {name}", str(rule["expr"]).strip()))
    return found


def promql_regex_literal(value: str) -> str:
    """``value`` as a regex matching only itself, escaped for a PromQL "..." string."""
    regex = re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", value)
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace every Grafana variable; an unknown one fails the test."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in values:
            return values[name]
        pytest.fail(f"unknown Grafana variable ${name} in {expr!r}: teach the test its value")

    out = VAR_RE.sub(one, expr)
    assert "$" not in out and "[[" not in out, out
    return out


# --- relaxing comparisons, finding selectors --------------------------------------------

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2", "start", "end",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN_RE = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<braces>\{[^}]*\})
      | (?P<range>\[[^\]]*\])
      | (?P<cmp>==|!=|>=|<=|>|<)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<number>[0-9][0-9.eExXa-fA-F]*[smhdwy]*)
      | (?P<space>\s+)
      | (?P<other>.)""",
    re.VERBOSE,
)
MATCHER_RE = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)""")


def relax(expr: str) -> str:
    """``expr`` with ``bool`` after every comparison operator that lacks it."""
    out: list[str] = []
    tokens = list(TOKEN_RE.finditer(expr))
    for i, tok in enumerate(tokens):
        out.append(tok.group())
        if tok.lastgroup == "cmp":
            rest = [t for t in tokens[i + 1 :] if t.lastgroup != "space"]
            if not (rest and rest[0].group() == "bool"):
                out.append(" bool")
    text = "".join(out)
    for word in ("unless", "absent(", "absent_over_time("):
        # these turn "no series" into an answer; relaxing cannot prove their operand
        assert word not in text, f"teach relax() about {word!r}: {expr!r}"
    return text


@attrs.frozen
class Parts:
    selectors: tuple[str, ...]  # metric name + matchers, as written
    labels: frozenset[str]  # labels named in grouping clauses and matchers


def parts(expr: str) -> Parts:
    tokens = [t for t in TOKEN_RE.finditer(expr) if t.lastgroup != "space"]
    selectors: list[str] = []
    labels: set[str] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.lastgroup == "ident" and tok.group() in GROUPING:
            if nxt is not None and nxt.group() == "(":  # a label list
                i += 2
                while i < len(tokens) and tokens[i].group() != ")":
                    if tokens[i].lastgroup == "ident":
                        labels.add(tokens[i].group())
                    i += 1
            i += 1
            continue
        if tok.lastgroup == "ident" and tok.group() not in KEYWORDS:
            if nxt is not None and nxt.group() == "(":  # a function call
                i += 1
                continue
            selector = tok.group()
            if nxt is not None and nxt.lastgroup == "braces":
                selector += nxt.group()
                labels.update(MATCHER_RE.findall(nxt.group()))
                i += 1
            selectors.append(selector)
        elif tok.lastgroup == "braces":  # a selector without a metric name
            selectors.append(tok.group())
            labels.update(MATCHER_RE.findall(tok.group()))
        i += 1
    labels.discard("__name__")
    return Parts(tuple(selectors), frozenset(labels))


# --- checking ---------------------------------------------------------------------------


@attrs.define
class Row:
    source: str
    expr: str  # as sent
    series: int
    relaxed: int | None = None  # series of the relaxed form, when ``series`` is 0
    one: int | None = None  # series with one connection picked instead of All


def check_expr(prom: Prometheus, source: str, expr: str) -> Row:
    row = Row(source, expr, len(prom.query(expr)))
    if row.series == 0:
        row.relaxed = len(prom.query(relax(expr)))
        assert row.relaxed > 0, f"{source}: no series even relaxed: {relax(expr)!r}"
    found = parts(expr)
    assert found.selectors, f"{source}: no selector found in {expr!r}"
    seen_labels: set[str] = set()
    for selector in found.selectors:
        series = prom.api("series", **{"match[]": selector})
        assert series, f"{source}: selector {selector} matches no series"
        for s in series:
            seen_labels.update(s)
    missing = found.labels - seen_labels
    assert not missing, f"{source}: labels {sorted(missing)} on none of {found.selectors}"
    return row


def check_variable(prom: Prometheus, var: dict[str, Any]) -> tuple[Row, list[str]]:
    """A query variable's values (through the label/series API), which must not be empty."""
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    query = str(query).strip()
    source = f"variable: ${var['name']}"
    if m := re.fullmatch(r"label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)", query):
        selector, label = m.group(1), m.group(2)
        params = {"match[]": selector} if selector else {}
        values = list(prom.api(f"label/{label}/values", **params))
        if selector:
            assert label in parts(selector).labels | {label}
            assert prom.api("series", **{"match[]": selector}), f"{source}: {selector}"
    elif m := re.fullmatch(r"query_result\((.+)\)", query):
        values = [json.dumps(s["metric"]) for s in prom.query(m.group(1))]
    else:
        pytest.fail(f"{source}: teach the test this variable query: {query!r}")
    assert values, f"{source}: {query!r} has no values"
    return Row(source, query, len(values)), sorted(values)


def variable_values(
    prom: Prometheus, variables: list[dict[str, Any]]
) -> tuple[list[Row], dict[str, str], dict[str, str]]:
    """Rows for the query variables, and the substitutions for "All" and for one value."""
    rows: list[Row] = []
    all_values: dict[str, str] = {}
    one_value: dict[str, str] = {}
    for var in variables:
        name, kind = var["name"], var.get("type")
        if kind == "datasource":
            assert var.get("query") == "prometheus", var
            all_values[name] = one_value[name] = "prometheus"
        elif kind == "query":
            row, values = check_variable(prom, var)
            rows.append(row)
            escaped = [promql_regex_literal(v) for v in values]
            if var.get("includeAll"):
                all_values[name] = var.get("allValue") or "|".join(escaped)
            else:
                all_values[name] = escaped[0]
            one_value[name] = escaped[0]
        elif kind in ("custom", "constant", "interval", "textbox"):
            current = var.get("current", {}).get("value") or var.get("query", "")
            value = current[0] if isinstance(current, list) else str(current)
            all_values[name] = one_value[name] = value.split(",")[0].strip()
        else:
            pytest.fail(f"variable ${name}: teach the test variables of type {kind!r}")
    return rows, all_values, one_value


def format_table(rows: list[Row], header: list[str]) -> str:
    lines = [*header, ""]
    lines.append(f"{'series':>6} {'relaxed':>7} {'one':>4}  source / query")
    for r in rows:
        relaxed = "-" if r.relaxed is None else str(r.relaxed)
        one = "-" if r.one is None else str(r.one)
        lines.append(f"{r.series:>6} {relaxed:>7} {one:>4}  {r.source}")
        lines.extend(f"{'':>21}{line}" for line in r.expr.splitlines())
    return "\n".join(lines) + "\n"


def test_every_dashboard_and_rule_expression(prometheus: Prometheus, service: Service) -> None:
    started = time.monotonic()
    wait_for_data(prometheus)
    doc = json.loads(DASHBOARD.read_text())
    panel_queries, variables = dashboard_queries(doc)
    assert len(panel_queries) >= 10, "the dashboard lost its queries?"

    rows, all_values, one_value = variable_values(prometheus, variables)
    values = prometheus.api("label/connection/values")
    assert set(values) == set(service.connections), values

    for q in panel_queries:
        row = check_expr(prometheus, q.source, substitute(q.expr, all_values))
        one = substitute(q.expr, one_value)
        if one != row.expr:
            row.one = len(prometheus.query(one))
            if row.one == 0:
                assert len(prometheus.query(relax(one))) > 0, f"{q.source}: {one!r}"
        rows.append(row)
    for q in rule_queries():
        rows.append(check_expr(prometheus, q.source, q.expr))

    # The connection whose server refuses: scraped down (the others up), and the
    # ConnectionDown alert pending for it (it fires after its `for: 5m`), for no other.
    up = {s["metric"]["connection"]: s["value"][1]
          for s in prometheus.query("forgejo_scheduler_connection_up")}
    assert up == {**{n: "1" for n in service.connections if n != REFUSED}, REFUSED: "0"}, up
    down = prometheus.query('ALERTS{alertname="ForgejoSchedulerConnectionDown"}')
    assert [(a["metric"]["connection"], a["metric"]["alertstate"]) for a in down] == [
        (REFUSED, "pending")], down

    picked = ", ".join(f"${k}={v}" for k, v in one_value.items() if k != "datasource")
    header = [
        "Live check: every PromQL expression of grafana/dashboard.json and prometheus/rules/",
        "against a real Prometheus scraping a running forgejo-scheduler",
        "(tests/test_prometheus_live.py; scripts/prometheus-live-check.py writes this file).",
        f"Prometheus: {prometheus.version}; scrape and rule interval 1s; "
        f"service: sim with {len(service.connections)} instances, capacity 2.",
        "Grafana variables: "
        + ", ".join(f"${k}={v}" for k, v in sorted({**BUILTINS, **all_values}.items())),
        "series: series returned; relaxed: series with `bool` on every comparison (only when",
        "series is 0, e.g. an alert that does not fire); one: series with one connection",
        f"selected instead of All ({picked}).",
        f"Queries: {len(rows)} ({len(panel_queries)} panel targets, "
        f"{len(rows) - len(panel_queries) - len(rule_queries())} variables, "
        f"{len(rule_queries())} rules).",
    ]
    table = format_table(rows, header)
    print(table)
    if target := os.environ.get("PROMETHEUS_LIVE_TABLE"):
        Path(target).write_text(table)
    assert time.monotonic() - started < 60


# --- the helpers themselves -------------------------------------------------------------


def test_relax_adds_bool_outside_strings_and_matchers() -> None:
    assert relax('a{x=~"y>1"} > 0 and on (job) b >= bool 2') == (
        'a{x=~"y>1"} > bool 0 and on (job) b >= bool 2'
    )
    assert relax("time() - (x > 0) > 10 * 60") == "time() - (x > bool 0) > bool 10 * 60"


def test_parts_finds_selectors_and_labels() -> None:
    p = parts(
        'histogram_quantile(0.5, sum by (connection, le) (rate(m_bucket{connection=~".*"}[1m])))'
        " / on (job) group_left count(n) and o:rec:sum > 0"
    )
    assert p.selectors == ('m_bucket{connection=~".*"}', "n", "o:rec:sum")
    assert p.labels == {"connection", "le", "job"}


def test_substitute_knows_every_form_and_refuses_unknown() -> None:
    got = substitute('r{c=~"$c"}[$__rate_interval] ${c} [[c]] ${c:regex}', {"c": "x"})
    assert got == 'r{c=~"x"}[1m] x x x'
    with pytest.raises(pytest.fail.Exception):
        substitute("$nope", {})
    assert promql_regex_literal("a.b") == "a\\\\.b"
