"""The scenarios behind figures 1-5 (all on virtual time; see bench/harness.py).

Three connections, as in the issue: fetch intervals 1 s / 2 s / 5 s, weights 1 / 1 / 2,
capacity 4, job durations uniform in 2-10 s (mean 6 s, so 4 slots finish about
0.67 jobs/s).

* ``SATURATED``: 1 job/s arrives on *each* instance, 4.5 times what the slots can
  run: every connection always has work. Figures 1, 4 and 5.
* ``MODERATE``: 0.1 / 0.1 / 0.15 jobs/s, about 52 % of the capacity, for 15 virtual
  minutes (100-150 pickups per connection and seed). Figure 2 and the second
  column of figure 4.
* ``HOL_HEALTHY`` / ``HOL_BLACKHOLED``: ``MODERATE`` plus a fourth connection ``d``
  (weight 1, 2 s) with no jobs. In the second, ``d``'s FetchTask is never answered
  (a simulator stall window over the whole run: the server accepts the request and
  goes silent, so the client waits its full ``fetch_timeout`` of 30 s). Figure 3.
* ``DROPS``: ``SATURATED`` with 10 % of the FetchTask answers that carry tasks
  dropped after the server assigned them (respond-then-drop), Forgejo 15 semantics
  (a retried request key replays its tasks). Figure 5.
"""

from __future__ import annotations

import attrs

from bench.harness import Conn, Scenario
from scheduler.sim import FaultPlan

CAPACITY = 4
DURATIONS = (2.0, 10.0)
NEVER = 1e9


def _three(rates: tuple[float, float, float], faults: FaultPlan | None = None) -> tuple[Conn, ...]:
    plan = faults or FaultPlan()
    return (
        Conn("a", weight=1, fetch_interval=1.0, rate=rates[0], durations=DURATIONS, faults=plan),
        Conn("b", weight=1, fetch_interval=2.0, rate=rates[1], durations=DURATIONS, faults=plan),
        Conn("c", weight=2, fetch_interval=5.0, rate=rates[2], durations=DURATIONS, faults=plan),
    )


SATURATED = Scenario("saturated", _three((1.0, 1.0, 1.0)), capacity=CAPACITY, duration=600.0,
                     warmup=60.0)
MODERATE = Scenario("moderate", _three((0.1, 0.1, 0.15)), capacity=CAPACITY, duration=900.0,
                    warmup=60.0)
_IDLE = Conn("d", weight=1, fetch_interval=2.0, rate=0.0, durations=DURATIONS)
HOL_HEALTHY = attrs.evolve(MODERATE, name="hol-healthy", conns=(*MODERATE.conns, _IDLE))
HOL_BLACKHOLED = attrs.evolve(
    MODERATE,
    name="hol-blackholed",
    conns=(*MODERATE.conns,
           attrs.evolve(_IDLE, faults=FaultPlan(stall_windows=[(0.0, NEVER)]))),
)
DROPS = attrs.evolve(SATURATED, name="drops",
                     conns=_three((1.0, 1.0, 1.0), FaultPlan(drop_after_assign=0.10)))

SCENARIOS = {s.name: s for s in (SATURATED, MODERATE, HOL_HEALTHY, HOL_BLACKHOLED, DROPS)}


def shrink(scenario: Scenario, duration: float) -> Scenario:
    """The same scenario with a shorter arrival window (for the smoke test)."""
    return attrs.evolve(scenario, duration=duration, warmup=min(scenario.warmup, duration / 4),
                        drain=min(scenario.drain, 30.0))
