"""``forgejo-scheduler``: run, demo, sim, check-config, register, import-config."""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from scheduler import __version__
from scheduler import demo as demo_mod
from scheduler.config import config_warnings, load_config, render_config
from scheduler.errors import ConfigError
from scheduler.logs import setup_logging
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
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the daemon",
        description="SIGTERM/SIGINT/SIGQUIT: drain (no new tasks, running ones finish within "
        "shutdown_timeout) and exit 0, or 3 if a final result was not acknowledged or a "
        "request key is left unresolved; a second one cancels running tasks at once. "
        "SIGHUP: reload the config file.",
    )
    run.add_argument("--config", "-c", type=Path, default=Path("config.toml"))
    run.add_argument("--watch-config", action="store_true",
                     help="reload the config file when it changes (checked every 2 s)")

    check = sub.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("--config", "-c", type=Path, default=Path("config.toml"))

    demo = sub.add_parser("demo", help="run the service against three simulated Forgejos")

    demo_mod.add_arguments(demo)

    sim = sub.add_parser("sim", help="serve simulated Forgejo instances")

    sim_cli.add_arguments(sim)

    reg = sub.add_parser("register", help="register a new runner on a Forgejo and add it "
                         "to the config as [connections.NAME]")

    register_mod.add_arguments(reg)

    imp = sub.add_parser("import-config", help="convert a forgejo-runner config.yml and/or "
                         ".runner file into a config.toml")

    import_mod.add_arguments(imp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "run":
        return run_daemon(args.config, args.log_level, watch=args.watch_config)
    if args.command == "demo":

        return demo_mod.run(args)
    if args.command == "sim":

        setup_logging(args.log_level)
        return sim_cli.run(args)
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


def run_daemon(path: Path, log_level: str, *, watch: bool = False) -> int:
    setup_logging(log_level)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(log_level, secrets=[c.token for c in config.connections])
    service = Service(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_signals, service, path)
            if watch:
                nursery.start_soon(watch_config, service, path)
            await service.run()
            nursery.cancel_scope.cancel()

    trio.run(main)
    # 0 only when every final report was acknowledged and no request key is left
    # unresolved; otherwise EXIT_NOT_ACKNOWLEDGED (3), see scheduler.drain.
    return service.stop_report.exit_status if service.stop_report is not None else 0


async def handle_signals(service: Service, path: Path) -> None:
    """First SIGTERM/SIGINT/SIGQUIT: drain. Second: cancel running tasks. SIGHUP: reload."""
    stops = 0
    with trio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP
    ) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading %s", path)
                service.reload_file(path)
                continue
            stops += 1
            if stops == 1:
                service.request_stop()
            else:
                service.abort()


async def watch_config(service: Service, path: Path, every: float = 2.0) -> None:
    """Reload when the file's content changes (compared by hash, so touch is harmless)."""
    last = _digest(path)
    while True:
        await trio.sleep(every)
        now = _digest(path)
        if now != last:
            last = now
            log.info("%s changed: reloading", path)
            service.reload_file(path)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
