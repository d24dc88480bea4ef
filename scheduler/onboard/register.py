"""``forgejo-scheduler register``: a new runner registration on a Forgejo, added to the
config as ``[connections.<name>]``.

What it does, in this order, so that nothing is sent before everything local is known
to be right and nothing is half-written afterwards:

1. read the registration token file (never echoed) and the config (a missing config
   is started from scratch);
2. refuse an existing ``[connections.<name>]`` unless ``--force`` (a second Register
   makes a *new* runner on the server and orphans the old one, so it must be wanted);
3. validate the config as it will be, with a placeholder uuid/token: labels, URL,
   name, capacity, state_dir... (the same checks as ``check-config``);
4. Register (runner.v1), as forgejo-runner's ``register`` does (label *names*, the
   version, the runner name, hostname by default). No Declare: like forgejo-runner,
   the daemon declares each connection when it starts;
5. write the runner token to ``<state_dir>/tokens/<name>.token`` (0600, atomically);
6. edit the config in place (comments kept), validate the final text, replace the
   file atomically with its mode kept.

If 5 or 6 fails after the server has registered the runner, the error says so with the
new runner's uuid, so it can be finished by hand or deleted in Forgejo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomlkit
import trio

from scheduler import __version__
from scheduler.config import _NAME_RE, ConnectionSettings
from scheduler.errors import ConfigError, ConnectError, OnboardError, RpcError
from scheduler.executor.labels import plan_labels
from scheduler.onboard import tomlfile as tf
from scheduler.onboard.tokens import read_secret, reference, token_path, write_token
from scheduler.protocol import messages as m
from scheduler.protocol.client import RunnerClient, ssl_context

#: The uuid and token variable the config is checked with before the server gave real ones.
_PLACEHOLDER_UUID = "00000000-0000-0000-0000-000000000000"
_PLACEHOLDER_ENV = "FORGEJO_SCHEDULER_REGISTER_PENDING"


@attrs.frozen(kw_only=True)
class RegisterArgs:
    config: Path
    connection: str
    url: str
    token_file: str  # "-" = standard input
    labels: tuple[str, ...] | None = None
    name: str | None = None
    force: bool = False
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float = 30.0


@attrs.frozen(kw_only=True)
class Registered:
    connection: str
    url: str
    runner_id: int
    uuid: str
    runner_name: str
    labels: tuple[str, ...]
    token_file: Path
    config: Path
    created_config: bool
    replaced: str | None  # the uuid of the registration this one replaced (--force)


ClientFactory = Callable[[RegisterArgs], RunnerClient]


def default_client(args: RegisterArgs) -> RunnerClient:
    verify = ssl_context(str(args.ca_file) if args.ca_file else None, args.insecure)
    return RunnerClient(args.url, uuid="", token="", timeout=args.timeout, verify=verify)


@attrs.frozen
class _Plan:
    """Everything checked locally before the server is asked."""

    args: RegisterArgs
    registration_token: str = attrs.field(repr=False)
    cf: tf.ConfigFile
    values: dict[str, Any]
    settings: ConnectionSettings
    token_file: Path
    replaced: str | None


async def register(
    args: RegisterArgs,
    client_factory: ClientFactory = default_client,
) -> Registered:
    plan = _prepare(args)
    runner_name = args.name or socket.gethostname()
    label_names = plan_labels(plan.settings.labels).names  # only those that can run here
    runner = await _register_rpc(
        args, client_factory, runner_name, plan.registration_token, label_names
    )
    return _finish(plan, runner, runner_name)


def _prepare(args: RegisterArgs) -> _Plan:
    if not _NAME_RE.fullmatch(args.connection):
        raise OnboardError(
            f"--connection {args.connection!r}: expected 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit (it names files and a metrics label)"
        )
    registration_token = read_secret(args.token_file, "registration token file")
    cf = tf.read_config(args.config)
    existing = tf.connection_table(cf.doc, args.connection)
    replaced = None
    if existing is not None:
        old_url, replaced = str(existing.get("url", "?")), str(existing.get("uuid", "?"))
        if not args.force:
            same = old_url.rstrip("/") == args.url.rstrip("/")
            raise OnboardError(
                f"{args.config}: connections.{args.connection} already exists "
                f"(url {old_url}, uuid {replaced}"
                + ("" if same else f", not {args.url}")
                + "); registering again creates a "
                "new runner in Forgejo and leaves the old one behind. Pass --force to "
                "replace it (then delete the old runner in Forgejo), or choose another "
                "--connection name"
            )

    values: dict[str, Any] = {"url": args.url}
    if args.labels is not None:
        values["labels"] = list(args.labels)
    if args.ca_file is not None:
        values["ca_file"] = str(args.ca_file.resolve())
    if args.insecure:
        values["insecure"] = True

    # The config as it will be, with placeholders: fail before the server is asked.
    data = cf.doc.unwrap()
    conns = data.setdefault("connections", {})
    if isinstance(conns, dict):
        draft = dict(conns.get(args.connection) or {})
        for key in ("token_file", "token_env", "token"):
            draft.pop(key, None)
        draft.update(values, uuid=_PLACEHOLDER_UUID, token_env=_PLACEHOLDER_ENV)
        conns[args.connection] = draft
    if not cf.exists:
        data["runner"] = {"capacity": 1}
    try:
        planned = tf.validate(data, cf.path)
    except ConfigError as exc:
        raise OnboardError(f"{exc} (nothing was registered)") from None
    settings = next(c for c in planned.connections if c.name == args.connection)
    token_file = token_path(planned.runner.state_dir, args.connection)
    _check_token_file(args, cf, existing, token_file)
    return _Plan(args, registration_token, cf, values, settings, token_file, replaced)


def _check_token_file(
    args: RegisterArgs, cf: tf.ConfigFile, existing: Mapping[str, Any] | None, path: Path
) -> None:
    """Refuse to overwrite a runner token file that is not this connection's own.

    ``<state_dir>/tokens/<name>.token`` may exist because another config shares this
    state_dir and has a connection of the same name, or a removed connection left it.
    Overwriting it would silently break that runner, so it is replaced only when this
    config's ``[connections.<name>]`` names it as its ``token_file`` and ``--force`` is
    given (re-registering the same connection); never otherwise.
    """
    if not os.path.lexists(path):
        return
    own = existing is not None and isinstance(existing.get("token_file"), str) and (
        os.path.realpath(cf.path.parent / str(existing["token_file"])) == os.path.realpath(path)
    )
    if own and args.force:
        return
    if own:  # the existing-connection check refuses first; kept for callers without it
        raise OnboardError(f"token file {path} exists; pass --force to replace it")
    raise OnboardError(
        f"token file {path} already exists and is not the token_file of "
        f"[connections.{args.connection}] in {args.config}: another config sharing "
        f"runner.state_dir {path.parent.parent} (or a removed connection) owns it, and "
        "overwriting it would break that runner. Choose another --connection name, give "
        "this config its own state_dir, or delete the file if nothing uses it "
        "(--force does not override this; nothing was registered)"
    )


def _finish(plan: _Plan, runner: m.Runner, runner_name: str) -> Registered:
    args, cf, token_file = plan.args, plan.cf, plan.token_file
    unfinished = f"the runner was registered in Forgejo (uuid {runner.uuid}, id {runner.id}) but"
    try:
        write_token(token_file, runner.token)
    except OnboardError as exc:
        raise OnboardError(f"{unfinished} {exc}; delete it in Forgejo and retry") from None
    if not cf.exists:
        _new_config_skeleton(cf)
    values = {**plan.values, "uuid": runner.uuid, "token_file": reference(cf.path, token_file)}
    values = {
        k: values[k]
        for k in ("url", "uuid", "token_file", "labels", "ca_file", "insecure")
        if k in values
    }
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tf.set_connection(
        cf.doc,
        args.connection,
        values,
        header=f"Registered by forgejo-scheduler register on {when} "
        f"(runner {runner.name or runner_name!r}, id {runner.id}).",
    )
    text = tf.render(cf.doc)
    try:
        tf.validate_text(text, cf.path)
        tf.write_config(cf, text)
    except (ConfigError, OnboardError) as exc:
        raise OnboardError(
            f"{unfinished} the config was left unchanged: {exc}. The token is in "
            f"{token_file}; add [connections.{args.connection}] with uuid = "
            f'"{runner.uuid}" and token_file = "{token_file}" by hand'
        ) from None
    return Registered(
        connection=args.connection,
        url=plan.settings.url,
        runner_id=runner.id,
        uuid=runner.uuid,
        runner_name=runner.name or runner_name,
        labels=plan.settings.labels,
        token_file=token_file,
        config=cf.path,
        created_config=not cf.exists,
        replaced=plan.replaced,
    )


async def _register_rpc(
    args: RegisterArgs,
    client_factory: ClientFactory,
    name: str,
    registration_token: str,
    label_names: tuple[str, ...],
) -> m.Runner:
    where = f"{args.url}: Register"

    def hide(text: str) -> str:  # a server could quote what it was sent
        return text.replace(registration_token, "<registration token>")

    try:
        async with client_factory(args) as client:
            runner = await client.register(name, registration_token, __version__, label_names)
    except ConnectError as exc:
        if exc.code == "unimplemented":
            why = (
                "no runner API at this URL (HTTP 404): is it the Forgejo root URL, and "
                "are Actions enabled there?"
            )
        elif exc.code in ("invalid_argument", "unauthenticated", "permission_denied", "not_found"):
            why = (
                f"the server refused the registration token from {args.token_file} "
                f"({hide(str(exc))}); create a new one in Forgejo's runner settings"
            )
        else:
            why = (
                f"the server failed ({hide(str(exc))}); a runner may or may not have been "
                "created: check Forgejo's runner list before retrying"
            )
        raise OnboardError(f"{where}: {why}") from None
    except RpcError as exc:
        raise OnboardError(
            f"{where}: no usable answer ({hide(str(exc))}); if the request reached the server "
            "a runner may have been created: check Forgejo's runner list"
        ) from None
    if not runner.uuid or not runner.token:
        raise OnboardError(f"{where}: the answer has no runner uuid or token")
    if any(c.isspace() or not c.isprintable() for c in runner.token):
        raise OnboardError(f"{where}: the runner token in the answer is malformed (not shown)")
    return runner


def _new_config_skeleton(cf: tf.ConfigFile) -> None:
    """The smallest valid config a first ``register`` creates (the connection follows)."""
    doc = cf.doc
    doc.add(
        tomlkit.comment("forgejo-scheduler configuration, created by `forgejo-scheduler register`.")
    )
    doc.add(
        tomlkit.comment(
            "Reference: docs/configuration.md. Check it with: "
            "forgejo-scheduler check-config --config <this file>"
        )
    )
    runner = tomlkit.table()
    runner.add(tomlkit.comment("How many tasks run at once, across all connections."))
    runner["capacity"] = 1
    runner.add(tomlkit.comment("Per-connection state and the runner token files."))
    runner["state_dir"] = "state"
    doc["runner"] = runner


# --- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path("config.toml"),
        help="config file to add the connection to (created if missing)",
    )
    parser.add_argument(
        "--connection", required=True, help="name of the [connections.NAME] table to add"
    )
    parser.add_argument("--url", required=True, help="the Forgejo instance's root URL")
    parser.add_argument(
        "--token-file",
        required=True,
        metavar="REGISTRATION_TOKEN_FILE",
        help="file holding the registration token from Forgejo's runner "
        "settings ('-' reads standard input); never a command-line value",
    )
    parser.add_argument(
        "--labels",
        action="append",
        metavar="LABEL[,LABEL...]",
        help="this connection's labels, e.g. debian:host (default: runner.labels of the config)",
    )
    parser.add_argument("--name", help="runner name shown in Forgejo (default: host name)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing [connections.NAME] with a new registration",
    )
    parser.add_argument("--ca-file", type=Path, help="PEM CA bundle to verify the server with")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate (dangerous)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the request")


def split_labels(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--labels a:host,b:host --labels c`` → three labels (forgejo-runner's comma
    form, blanks around commas ignored)."""
    if values is None:
        return None
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def run(ns: argparse.Namespace) -> int:
    args = RegisterArgs(
        config=ns.config,
        connection=ns.connection,
        url=ns.url,
        token_file=ns.token_file,
        labels=split_labels(ns.labels),
        name=ns.name,
        force=ns.force,
        ca_file=ns.ca_file,
        insecure=ns.insecure,
        timeout=ns.timeout,
    )
    try:
        done = trio.run(register, args)
    except OnboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"registered runner {done.runner_name!r} (id {done.runner_id}, uuid {done.uuid}) "
        f"on {done.url}"
    )
    if done.replaced:
        print(f"replaced the registration {done.replaced}: delete that runner in Forgejo")
    print(f"runner token: {done.token_file} (mode 0600)")
    verb = "created" if done.created_config else "updated"
    print(
        f"config {verb}: {done.config} [connections.{done.connection}], "
        f"labels {', '.join(done.labels)}"
    )
    labels = plan_labels(done.labels)
    if labels.dropped:
        print(
            f"declared to Forgejo: {', '.join(labels.names)}; kept in the config but not "
            f"declared: {labels.describe_dropped()}"
        )
    print(f"check it with: forgejo-scheduler check-config --config {done.config}")
    return 0
