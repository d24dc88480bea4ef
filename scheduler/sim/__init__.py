"""A built-in Forgejo simulator: real runner.v1 Connect (unary JSON) over loopback HTTP.

It powers the ``demo`` and ``sim`` commands, the tests and the benchmarks. It is an
independent implementation of protocol.md (it does not use ``scheduler.protocol``), so
that the client and the simulator cross-check each other. Forgejo 15 semantics by
default (idempotent FetchTask by ``x-runner-request-key``), Forgejo 14 on request, with
seeded fault injection and a ledger of what happened to every task.

    sim = Simulator([InstanceSpec("a", faults=FaultPlan(drop_after_assign=0.1)), "b"], seed=1)
    host, port = await nursery.start(sim.serve, "127.0.0.1", 0)
    sim.instances["a"].add_job(duration=0.4)
    sim.ledger.statistics()
"""

from scheduler.sim.faults import FaultPlan
from scheduler.sim.instance import InstanceSpec, SimInstance, SimTask
from scheduler.sim.ledger import Ledger, TaskRecord
from scheduler.sim.server import Simulator
from scheduler.sim.wire import Result
from scheduler.sim.workload import Workload

__all__ = [
    "FaultPlan",
    "InstanceSpec",
    "Ledger",
    "Result",
    "SimInstance",
    "SimTask",
    "Simulator",
    "TaskRecord",
    "Workload",
]
