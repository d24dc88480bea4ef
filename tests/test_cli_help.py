"""Every option of every subcommand says what it is for (`forgejo-scheduler X --help`)."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator

from scheduler.cli import build_parser
from tests.support.daemon import CLI, ROOT


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every action of ``parser`` and of its subparsers, with the command it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not helped.get(name):
                    yield f"{path} {name}", action  # a subcommand without help
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, action in walk(parser, parser.prog)
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    commands = {path for path, _ in walk(parser, parser.prog)}
    assert {"forgejo-scheduler exec", "forgejo-scheduler sim", "forgejo-scheduler demo"} <= commands


def test_the_walker_finds_an_option_without_help() -> None:
    parser = argparse.ArgumentParser(prog="p")
    sub = parser.add_subparsers()
    child = sub.add_parser("child", help="a child")
    child.add_argument("--bare")
    found = [(path, a.dest) for path, a in walk(parser, "p") if not a.help]
    assert found == [("p child", "bare")]


def test_help_texts_are_printed() -> None:
    for command, expected in (
        ("demo", "--seed"),
        ("run", "the config file"),
        ("sim", "where to serve every instance"),
        ("exec", "--job"),
    ):
        proc = subprocess.run([*CLI, command, "--help"], cwd=ROOT, capture_output=True,
                              text=True, check=False, timeout=60)
        assert proc.returncode == 0 and expected in proc.stdout, proc.stdout
