"""Smoke test of the benchmark harness (not a benchmark: nothing here measures speed).

Each policy runs 20 virtual seconds of the saturated workload on a MockClock; the
test checks that the harness wiring holds (tasks flow, the ledger agrees, no slot
is overused, the tables render), not any figure.
"""

from __future__ import annotations

import math

import pytest

from bench import figures
from bench.harness import run
from bench.policies import POLICIES
from bench.workloads import SATURATED, shrink


@pytest.fixture(scope="module")
def runs() -> figures.Runs:
    scenario = shrink(SATURATED, 20.0)
    return {(SATURATED.name, name): [run(name, policy, scenario, seed=1)]
            for name, policy in POLICIES.items()}


def test_every_policy_runs_tasks_through_the_same_plumbing(runs: figures.Runs) -> None:
    for (_, policy), (o,) in runs.items():
        assert o.spans, policy
        assert o.peak_running <= o.scenario.capacity, policy
        assert o.ledger["duplicate_executions"] == 0, policy
        assert o.ledger["lost"] == 0, policy  # no faults, and the drain lets tasks finish
        assert o.ledger["finished"] == len(o.spans), policy
        # Client and server agree, up to a fetch per connection cancelled at the stop.
        sent = sum(o.fetches.values())
        assert 0 <= sent - o.fetch_calls() <= len(o.scenario.conns), policy
        assert all(s.ended is not None and s.started >= s.queued for s in o.spans), policy


def test_tables_render_from_runs(runs: figures.Runs) -> None:
    table = figures.fig1(runs)
    assert [row[0] for row in table.rows] == list(POLICIES)
    assert all(0 < float(row[4]) <= 1 for row in table.rows)  # weighted Jain in (0, 1]
    for fig in (figures.fig2, figures.fig3, figures.fig4, figures.fig5):
        assert fig(runs).markdown().startswith("### Figure")
    assert figures.cell([1.0, 3.0]) == "2.00 (1.00-3.00)"
    assert figures.cell([math.nan]) == "-"
