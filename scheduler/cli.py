"""``forgejo-scheduler``: run, demo, sim, check-config."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from scheduler import __version__
from scheduler.config import ConfigError, load_config, render_config, token_file_warning
from scheduler.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgejo-scheduler",
        description="One Forgejo Actions runner for many Forgejo connections, "
        "sharing its slots fairly.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", type=Path, default=Path("config.toml"))

    check = sub.add_parser("check-config", help="validate a config and print it resolved")
    check.add_argument("--config", "-c", type=Path, default=Path("config.toml"))

    demo = sub.add_parser("demo", help="run the service against three simulated Forgejos")
    from scheduler import demo as demo_mod

    demo_mod.add_arguments(demo)

    sim = sub.add_parser("sim", help="serve simulated Forgejo instances")
    from scheduler.sim import cli as sim_cli

    sim_cli.add_arguments(sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "run":
        return run_daemon(args.config, args.log_level)
    if args.command == "demo":
        from scheduler import demo as demo_mod

        return demo_mod.run(args)
    if args.command == "sim":
        from scheduler.sim import cli as sim_cli

        setup_logging(args.log_level)
        return sim_cli.run(args)
    raise AssertionError(args.command)


def check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in config.connections:
        if c.token_source.startswith("file:"):
            warning = token_file_warning(Path(c.token_source.removeprefix("file:")))
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
    print(render_config(config), end="")
    return 0


def run_daemon(path: Path, log_level: str) -> int:
    setup_logging(log_level)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(log_level, secrets=[c.token for c in config.connections])
    for c in config.connections:
        if c.token_source.startswith("file:"):
            warning = token_file_warning(Path(c.token_source.removeprefix("file:")))
            if warning:
                import logging

                logging.getLogger("scheduler").warning("%s", warning)
    from scheduler.service import Service

    service = Service(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_signals, service)
            await service.run()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


async def handle_signals(service: object) -> None:
    """First SIGTERM/SIGINT: drain. Second: cancel running tasks at once."""
    from scheduler.service import Service

    assert isinstance(service, Service)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                service.request_stop()
            else:
                service.abort()
