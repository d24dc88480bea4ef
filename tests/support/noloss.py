"""The no-loss promise, checked on the simulator's ledger (the server's side of the
story, which sees tasks inside answers the runner never read).

Every task the simulator assigned was finished, by the runner or a server-side cancel
(not by the zombie reaper, and not left running), and none was executed twice.
"""

from __future__ import annotations

from scheduler.sim import Simulator


def assert_no_loss(sim: Simulator) -> None:
    """Nothing lost (unfinished, or finished only by the zombie reaper), nothing run
    twice; the failure names each offending task and what happened to it."""
    records = sim.ledger.tasks.values()
    lost = [rec for rec in records if rec.lost]
    doubled = [rec for rec in records if rec.duplicate]
    problems = [
        f"task {rec.task_id} on {rec.instance}: "
        + ("never finished" if rec.finished_by is None else f"finished by {rec.finished_by}")
        for rec in lost
    ] + [
        f"task {rec.task_id} on {rec.instance}: executed twice ({'; '.join(rec.duplicate_reasons)})"
        for rec in doubled
    ]
    assert not problems, (
        f"{len(lost)} lost and {len(doubled)} duplicated of {len(records)} assigned:\n  "
        + "\n  ".join(problems)
    )
