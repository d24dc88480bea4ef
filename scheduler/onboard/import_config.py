"""``forgejo-scheduler import-config``: a forgejo-runner ``config.yml`` and/or ``.runner``
file turned into our ``config.toml`` in one command.

Order of work, so that a failure leaves nothing behind: read and map the source
(:mod:`scheduler.onboard.forgejo_runner`), refuse an existing output without
``--force``, validate the new config with placeholders for the tokens still to be
written, write the token files (0600, under ``<output dir>/state/tokens``), validate the
final text, write the output atomically. If the last step fails, the token files this
run created are removed again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import attrs
import tomlkit

from scheduler.config import Config
from scheduler.durations import format_duration
from scheduler.errors import ConfigError, OnboardError
from scheduler.executor.labels import plan_labels
from scheduler.onboard import tomlfile as tf
from scheduler.onboard.forgejo_runner import Source, read_source
from scheduler.onboard.tokens import reference, token_path, write_token

_PLACEHOLDER_ENV = "FORGEJO_SCHEDULER_IMPORT_PENDING"


@attrs.frozen(kw_only=True)
class Imported:
    output: Path
    source: Source
    token_files: tuple[Path, ...]
    carried: tuple[str, ...]  # "runner.capacity", "connections.x.url"...
    created_dirs: tuple[Path, ...] = ()  # the output's directory and parents, made 0700
    undeclared: tuple[str, ...] = ()  # "connections.x: label (why), ..."


def import_config(
    config_yml: Path | None,
    runner_file: Path | None,
    output: Path,
    *,
    force: bool = False,
    connection: str | None = None,
) -> Imported:
    if config_yml is None and runner_file is None:
        raise OnboardError("nothing to import: give a config.yml and/or --runner-file")
    source = read_source(config_yml, runner_file, connection)
    cf = tf.read_config(output, missing_dir_ok=True)
    if cf.exists and not force:
        raise OnboardError(
            f"{output} exists; pass --force to replace it (or choose another --output)"
        )

    doc, carried = _document(source)
    state_dir = cf.path.parent / "state"
    tokens = {c.name: token_path(state_dir, c.name) for c in source.connections if c.token}
    for path in tokens.values():
        if path.exists() and not force:
            raise OnboardError(f"token file {path} exists; pass --force to replace it")

    # The config as it will be, tokens still to write standing in as an env variable.
    data = doc.unwrap()
    for name in tokens:
        data["connections"][name]["token_env"] = _PLACEHOLDER_ENV
    try:
        planned = tf.validate(data, cf.path)
    except ConfigError as exc:
        raise OnboardError(
            f"the imported configuration is not valid: {exc} (nothing was written)"
        ) from None

    undeclared = _undeclared(planned)
    created = [p for p in tokens.values() if not p.exists()]
    made_dirs: list[Path] = []
    try:
        made_dirs = tf.make_config_dir(cf.path.parent)
        for conn in source.connections:
            if conn.token:
                write_token(tokens[conn.name], conn.token)
                tf.set_connection(
                    doc, conn.name, {"token_file": reference(cf.path, tokens[conn.name])}
                )
        text = tf.render(doc)
        tf.validate_text(text, cf.path)
        tf.write_config(cf, text)
    except (OnboardError, ConfigError) as exc:
        for path in created:
            path.unlink(missing_ok=True)
        tf.remove_dirs(made_dirs)
        raise OnboardError(f"{exc} (the output was not written)") from None
    return Imported(
        output=cf.path,
        source=source,
        token_files=tuple(tokens.values()),
        carried=tuple(carried),
        created_dirs=tuple(made_dirs),
        undeclared=undeclared,
    )


def _undeclared(config: Config) -> tuple[str, ...]:
    """Per connection, the labels written to the file but not declared to Forgejo."""
    out = []
    for c in config.connections:
        plan = plan_labels(c.labels)
        if plan.dropped:
            out.append(f"connections.{c.name}: {plan.describe_dropped()}")
    return tuple(out)


def _document(source: Source) -> tuple[tomlkit.TOMLDocument, list[str]]:
    carried: list[str] = []
    doc = tomlkit.document()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc.add(
        tomlkit.comment(
            f"Imported from forgejo-runner by forgejo-scheduler import-config on {when}:"
        )
    )
    for path in source.files:
        doc.add(tomlkit.comment(f"  {path.resolve()}"))
    doc.add(tomlkit.comment("Reference: docs/configuration.md; mapping: docs/onboarding.md."))
    if source.dropped:
        doc.add(tomlkit.comment("Not carried over (no counterpart in forgejo-scheduler):"))
        for line in source.dropped:
            doc.add(tomlkit.comment(f"  {line}"))
    doc.add(tomlkit.nl())

    runner = tomlkit.table()
    runner["capacity"] = source.runner.get("capacity", 1)  # forgejo-runner's default too
    for key in (
        "capacity",
        "fetch_interval",
        "fetch_timeout",
        "report_interval",
        "shutdown_timeout",
    ):
        if key in source.runner:
            runner[key] = source.runner[key]
            carried.append(f"runner.{key}")
    if source.insecure:
        carried.append("runner.insecure (as insecure = true on every connection)")
    runner.add(tomlkit.comment("Per-connection state and the runner token files."))
    runner["state_dir"] = "state"
    if "labels" in source.runner:
        runner["labels"] = source.runner["labels"]
        carried.append("runner.labels")
    for key, theirs in (("job_timeout", "timeout"), ("envs", "envs"), ("env_file", "env_file")):
        if key in source.runner:
            value = source.runner[key]
            if key == "envs":
                value = tomlkit.inline_table()
                value.update(source.runner[key])
            runner[key] = value
            carried.append(f"runner.{theirs}" + (f" (as {key})" if key != theirs else ""))
    doc["runner"] = runner

    conns = tomlkit.table(is_super_table=True)
    for c in source.connections:
        t = tomlkit.table()
        t.add(tomlkit.comment(f"From {c.origin}."))
        values: dict[str, Any] = {"url": c.url, "uuid": c.uuid}
        if c.token_file is not None:
            values["token_file"] = str(c.token_file)
        if c.labels is not None:
            values["labels"] = list(c.labels)
        if c.fetch_interval is not None:
            values["fetch_interval"] = format_duration(c.fetch_interval)
        if source.insecure:
            values["insecure"] = True
        for key, value in values.items():
            t[key] = value
            carried.append(f"connections.{c.name}.{key}")
        if c.token:
            carried.append(f"connections.{c.name}.token_file")
        conns[c.name] = t
    doc["connections"] = conns
    return doc, carried


# --- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config_yml",
        nargs="?",
        type=Path,
        metavar="config.yml",
        help="forgejo-runner's config file (with or without server.connections)",
    )
    parser.add_argument(
        "--runner-file",
        type=Path,
        metavar=".runner",
        help="forgejo-runner's registration file (default: runner.file of "
        "config.yml, next to it, when it has no server.connections)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("config.toml"),
        help="the config.toml to write (default: ./config.toml); a missing directory "
        "is created, mode 0700",
    )
    parser.add_argument(
        "--connection", help="connection name for a .runner registration (default: its runner name)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output and token files"
    )


def run(ns: argparse.Namespace) -> int:
    try:
        done = import_config(
            ns.config_yml, ns.runner_file, ns.output, force=ns.force, connection=ns.connection
        )
    except OnboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    src = done.source
    names = ", ".join(c.name for c in src.connections)
    for directory in done.created_dirs:
        print(f"created directory {directory} (mode 0700)")
    print(f"wrote {done.output}: {len(src.connections)} connection(s): {names}")
    for path in done.token_files:
        print(f"runner token: {path} (mode 0600)")
    print("carried over: " + ", ".join(done.carried))
    for line in src.dropped:
        print(f"not carried over: {line}")
    if src.empty:
        print("empty in the source, nothing to carry: " + ", ".join(src.empty))
    for line in src.notes:
        print(f"note: {line}")
    for line in done.undeclared:
        print(f"labels kept in the file but not declared to Forgejo: {line}")
    print(f"check it with: forgejo-scheduler check-config --config {done.output}")
    return 0
