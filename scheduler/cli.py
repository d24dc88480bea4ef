"""``forgejo-scheduler``: run, demo, sim, exec, check-config, register, import-config."""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from scheduler import __version__
from scheduler import demo as demo_mod
from scheduler import exec as exec_mod
from scheduler.config import Config, config_warnings, load_config, render_config
from scheduler.errors import ConfigError
from scheduler.logs import DEFAULT_FORMAT, DEFAULT_LEVEL, FORMATS, LEVELS, setup_logging
from scheduler.onboard import import_config as import_mod
from scheduler.onboard import register as register_mod
from scheduler.service import Service
from scheduler.sim import cli as sim_cli

log = logging.getLogger("scheduler.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgejo-scheduler",
        description="One Forgejo Actions runner for many Forgejo connections, "
        "sharing its slots fairly.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="SIGTERM/SIGINT/SIGQUIT: drain (no new tasks, running ones finish within "
        "shutdown_timeout) and exit 0, or 3 if a final result was not acknowledged or a "
        "request key is left unresolved; a second one cancels running tasks at once. "
        "SIGHUP: reload the config file.",
    )
    run.add_argument("--config", "-c", type=Path, default=Path("config.toml"),
                     help="the config file (default ./config.toml)")
    run.add_argument("--watch-config", action="store_true",
                     help="reload the config file when it changes (checked every 2 s)")

    check = sub.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("--config", "-c", type=Path, default=Path("config.toml"),
                       help="the config file (default ./config.toml)")

    demo = sub.add_parser("demo", help="run the service against three simulated Forgejos",
                          description=demo_mod.DESCRIPTION)

    demo_mod.add_arguments(demo)

    sim = sub.add_parser("sim", help="serve simulated Forgejo instances",
                         description=sim_cli.DESCRIPTION)

    sim_cli.add_arguments(sim)

    exe = sub.add_parser("exec", help="run a workflow's job here, through a simulated Forgejo "
                         "and the real service and host executor", description=exec_mod.DESCRIPTION)

    exec_mod.add_arguments(exe)

    reg = sub.add_parser("register", help="register a new runner on a Forgejo and add it "
                         "to the config as [connections.NAME]")

    register_mod.add_arguments(reg)

    imp = sub.add_parser("import-config", help="convert a forgejo-runner config.yml and/or "
                         ".runner file into a config.toml")

    import_mod.add_arguments(imp)
    for subcommand in sub.choices.values():
        add_log_options(subcommand, top=False)
    return parser


def add_log_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--log-level``/``--log-format``, before or after the subcommand. After it they
    default to nothing at all (SUPPRESS), so they do not undo a value given before it;
    unset in both places, ``run`` takes ``[logging]`` from its config."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--log-level", type=str.lower, choices=tuple(LEVELS), default=default,
        help="default info (run: the config's [logging] level); debug adds our debug "
        "lines and one line per HTTP request, trace also the HTTP libraries' internals")
    parser.add_argument(
        "--log-format", type=str.lower, choices=FORMATS, default=default,
        help="default text (run: the config's [logging] format); json: one object a line "
        "with ts, level, logger, message and, where known, connection, task_id, "
        "repository, job")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_daemon(args.config, args.log_level, args.log_format, watch=args.watch_config)
    args.log_level = args.log_level or DEFAULT_LEVEL
    args.log_format = args.log_format or DEFAULT_FORMAT
    setup_logging(args.log_level, fmt=args.log_format)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "demo":
        return demo_mod.run(args)
    if args.command == "sim":
        return sim_cli.run(args)
    if args.command == "exec":
        return exec_mod.run(args)
    if args.command == "register":
        return register_mod.run(args)
    if args.command == "import-config":
        return import_mod.run(args)
    raise AssertionError(args.command)


def check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(render_config(config), end="")
    return 0


def run_daemon(
    path: Path, log_level: str | None, log_format: str | None, *, watch: bool = False
) -> int:
    """``log_level``/``log_format`` None: the config's ``[logging]`` (again on a reload)."""
    setup_logging(log_level or DEFAULT_LEVEL, fmt=log_format or DEFAULT_FORMAT)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tokens: set[str] = set()  # never forgotten: a removed connection drains after a reload

    def configure_logging(config: Config) -> None:
        tokens.update(c.token for c in config.connections)
        setup_logging(log_level or config.logging.level, secrets=tokens,
                      fmt=log_format or config.logging.format)

    configure_logging(config)
    service = Service(config)

    def reload() -> None:
        if service.reload_file(path):
            configure_logging(service.config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_signals, service, path, reload)
            if watch:
                nursery.start_soon(watch_config, path, reload)
            await service.run()
            nursery.cancel_scope.cancel()

    trio.run(main)
    # 0 only when every final report was acknowledged and no request key is left
    # unresolved; otherwise EXIT_NOT_ACKNOWLEDGED (3), see scheduler.drain.
    return service.stop_report.exit_status if service.stop_report is not None else 0


async def handle_signals(service: Service, path: Path, reload: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT/SIGQUIT: drain. Second: cancel running tasks. SIGHUP: reload."""
    stops = 0
    with trio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP
    ) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading %s", path)
                reload()
                continue
            stops += 1
            if stops == 1:
                service.request_stop()
            else:
                service.abort()


async def watch_config(path: Path, reload: Callable[[], None], every: float = 2.0) -> None:
    """Reload when the file's content changes (compared by hash, so touch is harmless)."""
    last = _digest(path)
    while True:
        await trio.sleep(every)
        now = _digest(path)
        if now != last:
            last = now
            log.info("%s changed: reloading", path)
            reload()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
