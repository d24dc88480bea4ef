"""What a changed config means for a running service: a pure diff, applied by the service.

Live changes (no running task is disturbed): capacity, each connection's weight,
min/max slots, fetch interval and labels, the report interval and shutdown
timeout, job_timeout and the job environment (for tasks started afterwards), added
connections (they start) and removed connections (they drain: no new tasks, an
unresolved key is still retried, running tasks finish).

Not live, kept at their old values with a warning: the state directory, the
metrics listen address, the fetch timeout, and a connection's URL, UUID, token,
CA file or TLS setting (its client is built once; remove the connection and add
it under a new name, or restart).
"""

from __future__ import annotations

import attrs

from scheduler.config import Config, ConnectionSettings

_IDENTITY = ("url", "uuid", "token", "ca_file", "insecure")
_TUNABLE = ("weight", "min_slots", "max_slots", "fetch_interval", "fetch_interval_max",
            "labels", "job_timeout", "job_env")  # job settings: for the tasks started after it


@attrs.frozen
class ReloadPlan:
    config: Config  # the config that will be in force: the new one minus what cannot change
    capacity_changed: bool
    added: tuple[ConnectionSettings, ...]
    removed: tuple[str, ...]
    retuned: tuple[ConnectionSettings, ...]
    relabelled: tuple[str, ...]
    kept: tuple[str, ...]  # warnings: changes that need a restart and were not applied


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    kept: list[str] = []
    runner = new.runner
    if runner.state_dir != old.runner.state_dir:
        kept.append(f"runner.state_dir stays {old.runner.state_dir} until a restart")
        runner = attrs.evolve(runner, state_dir=old.runner.state_dir)
    if runner.fetch_timeout != old.runner.fetch_timeout:
        kept.append(f"runner.fetch_timeout stays {old.runner.fetch_timeout:g}s until a restart")
        runner = attrs.evolve(runner, fetch_timeout=old.runner.fetch_timeout)
    metrics = new.metrics
    if metrics != old.metrics:
        kept.append("metrics.listen stays as it is until a restart")
        metrics = old.metrics

    old_by_name = {c.name: c for c in old.connections}
    new_names = {c.name for c in new.connections}
    connections: list[ConnectionSettings] = []
    added: list[ConnectionSettings] = []
    retuned: list[ConnectionSettings] = []
    relabelled: list[str] = []
    for c in new.connections:
        before = old_by_name.get(c.name)
        if before is None:
            added.append(c)
            connections.append(c)
            continue
        changed_identity = [k for k in _IDENTITY if getattr(c, k) != getattr(before, k)]
        if changed_identity:
            kept.append(
                f"connections.{c.name}: {', '.join(changed_identity)} cannot change while "
                "running (remove the connection and add it under a new name, or restart)"
            )
            c = attrs.evolve(c, **{k: getattr(before, k) for k in _IDENTITY})
        if any(getattr(c, k) != getattr(before, k) for k in _TUNABLE):
            retuned.append(c)
            if c.labels != before.labels:
                relabelled.append(c.name)
        connections.append(c)
    removed = tuple(name for name in old_by_name if name not in new_names)
    config = attrs.evolve(new, runner=runner, metrics=metrics, connections=tuple(connections))
    return ReloadPlan(
        config=config,
        capacity_changed=runner.capacity != old.runner.capacity,
        added=tuple(added),
        removed=removed,
        retuned=tuple(retuned),
        relabelled=tuple(relabelled),
        kept=tuple(kept),
    )
