"""The start-up summary: what this process is and what each connection will do.

One line for the service (version, capacity, connections, state directory) when
:meth:`Service.run <scheduler.service.Service.run>` starts, and one line per
connection when its loop is built (at start, and for a connection a reload adds):
its URL, the labels it declares to Forgejo (the loop's own
:attr:`~scheduler.connection.ConnectionLoop.label_names`, so the line says what is
really declared), where its jobs run, its share of the slots and its fetch interval.
An operator reading the first lines of a log knows what the runner was asked to do
without opening the config; nothing here names a token.
"""

from __future__ import annotations

import getpass

from scheduler import __version__
from scheduler.config import Config
from scheduler.connection import ConnectionLoop
from scheduler.durations import format_duration
from scheduler.executor import Executor, HostExecutor


def service_summary(config: Config) -> str:
    r = config.runner
    names = ", ".join(c.name for c in config.connections)
    return (
        f"forgejo-scheduler {__version__} starting: capacity {r.capacity}, "
        f"{len(config.connections)} connection(s) ({names}), config {config.source}, "
        f"state in {r.state_dir}"
    )


def where_jobs_run(executor: Executor) -> str:
    """Which executor runs the jobs, and where."""
    if isinstance(executor, HostExecutor):
        return f"on this host as user {_user()} (host executor, in {executor.work_root})"
    return f"by {type(executor).__name__}"


def connection_summary(loop: ConnectionLoop, executor: Executor, capacity: int) -> str:
    s = loop.settings
    declared = ", ".join(loop.label_names) or "none"
    share = f"weight {s.weight:g}, slots {s.min_slots}..{s.max_slots} of {capacity}"
    return (
        f"connection {s.name}: {s.url}, declares labels {declared}; its jobs run "
        f"{where_jobs_run(executor)}; share: {share}; fetch every "
        f"{format_duration(s.fetch_interval)}"
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        return "?"
