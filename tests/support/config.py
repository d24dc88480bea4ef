"""The one TOML encoder and the one config writer of the tests.

Configs are written as files and loaded by the real loader (``load_config``), so that a
test exercises what an operator's file goes through; tokens go to 0600 files as the
loader demands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from scheduler.sim import Simulator
from scheduler.sim.server import duration_text

#: A duration as the config writes it: seconds, or the config's own text ("2s", "10m").
Duration = float | str


@attrs.frozen
class Inline:
    """A connection's ``token`` written into the config itself (``token = "..."``),
    where a plain ``token`` goes to a 0600 file."""

    token: str


def toml_value(value: Any) -> str:
    """One TOML value: booleans, numbers (nan and inf included), strings (a JSON string
    is a TOML basic string), dates and times, lists, and mappings as inline tables.
    Anything else (a ``Path``...) is written as its ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr(nan) == "nan", repr(inf) == "inf": TOML's spelling
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(toml_pairs(value)) + "}"
    return json.dumps(str(value))


def toml_pairs(table: Mapping[Any, Any]) -> list[str]:
    """``key = value`` for each entry, every key quoted (any text is a valid key then)."""
    return [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in table.items()]


def toml_tables(
    doc: Mapping[str, Mapping[str, Any]],
    names: Iterable[str] = ("runner", "metrics", "connections"),
    *,
    nested: Collection[str] = ("connections",),
) -> str:
    """The tables ``names`` of ``doc`` (those present; any other key is left out), in
    that order, as TOML tables; each table of tables in ``nested`` as one
    ``[connections."<name>"]`` table per entry."""
    lines: list[str] = []
    for section in names:
        if section not in doc:
            continue
        table = doc[section]
        if section in nested:
            for name, sub in table.items():
                lines.append(f"[{section}.{json.dumps(str(name))}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in sub.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(
    path: Path,
    connections: Mapping[str, Mapping[str, object]],
    *,
    capacity: int,
    state_dir: Path | None = None,
    fetch_interval: Duration = "1s",
    fetch_timeout: Duration = "30s",
    shutdown_timeout: Duration = "10m",
    metrics: str | None = None,
    labels: Iterable[str] = ("sim:host",),
    runner_extra: Mapping[str, object] | None = None,
) -> Path:
    """A config for any servers. Each connection has ``url``, ``uuid`` and ``token``
    (written to a 0600 token file next to the config, or into the config when it is an
    :class:`Inline`) or its own token key, plus any other keys. The state lives in
    ``state_dir`` (by default ``state`` next to the config); ``metrics=None`` disables
    the metrics server; ``runner_extra`` adds ``[runner]`` keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "[runner]",
        f"capacity = {capacity}",
        f"state_dir = {toml_value(str(state_dir or path.parent / 'state'))}",
        f"labels = {toml_value(list(labels))}",
        f"fetch_interval = {toml_value(duration_text(fetch_interval))}",
        f"fetch_timeout = {toml_value(duration_text(fetch_timeout))}",
        f"shutdown_timeout = {toml_value(duration_text(shutdown_timeout))}",
        *(f"{k} = {toml_value(v)}" for k, v in (runner_extra or {}).items()),
        "",
        "[metrics]",
        f"listen = {toml_value(metrics or '')}",
    ]
    for name, conn in connections.items():
        lines += ["", f"[connections.{name}]"]
        for key, value in conn.items():
            if key == "token" and isinstance(value, Inline):
                lines.append(f"token = {toml_value(value.token)}")
            elif key == "token":
                token_file = path.parent / f"{name}.token"
                fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(value))
                lines.append(f"token_file = {toml_value(str(token_file))}")
            else:
                lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sim_connection(sim: Simulator, name: str, **extra: object) -> dict[str, object]:
    """A connection table to the simulator's instance ``name``, as its runner."""
    inst = sim.instances[name]
    return {"url": sim.base_url(name), "uuid": inst.runner.uuid, "token": inst.runner.token,
            **extra}


def no_metrics(config: Path) -> None:
    """No metrics server in a config written by someone else (``register``, ``import``):
    the default port 9464 may be taken on a test machine."""
    with config.open("a") as fh:
        fh.write('\n[metrics]\nlisten = ""\n')


def sim_config(
    home: Path,
    sim: Simulator,
    *,
    capacity: int,
    connect: Iterable[str] | None = None,
    tuning: Mapping[str, Mapping[str, object]] | None = None,
    others: Mapping[str, Mapping[str, object]] | None = None,
    labels: Iterable[str] = ("sim:host",),
    **runner: Any,
) -> Path:
    """``home/config.toml`` (state in ``home/state``) for the simulator's instances
    ``connect`` (all by default), each with the runner's labels and its keys from
    ``tuning`` (``weight``, ``max_slots``...), plus the connections ``others`` to other
    servers; ``runner`` holds :func:`write_config`'s other keywords."""
    label_list = list(labels)
    names = list(sim.instances) if connect is None else list(connect)
    conns: dict[str, Mapping[str, object]] = {
        name: sim_connection(sim, name, labels=label_list, **(tuning or {}).get(name, {}))
        for name in names
    }
    conns.update(others or {})
    return write_config(home / "config.toml", conns, capacity=capacity, labels=label_list,
                        **runner)
