"""Workflow commands: ``::set-output::`` lines and the ``GITHUB_*`` command files.

Two channels, as in forgejo-runner (executor.md §3):

* lines a step prints: ``::set-env``, ``::set-output``, ``::add-path``, ``::save-state``
  and ``::stop-commands`` are acted on here (``act/runner/command.go``), still honoured
  without any opt-in as forgejo-runner does; what the line *shows* in the log
  (``::add-mask::`` hidden, ``::group::`` rewritten) is the reporter's business;
* files: before every stage of a step the runner creates empty ``GITHUB_OUTPUT``,
  ``GITHUB_STATE``, ``GITHUB_PATH``, ``GITHUB_ENV`` and ``GITHUB_STEP_SUMMARY`` files
  (each also as ``FORGEJO_*``), and reads them back afterwards, even when the step
  failed.

The env-file format (``act/container/parse_env_file.go``): ``NAME=value`` (split at the
first ``=`` when it comes before any ``<<``) or ``NAME<<DELIM`` followed by lines up to
a line that is exactly ``DELIM``. Other lines are an error. forgejo-runner also fails
on blank lines; they are skipped here, as GitHub's runner does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs

# forgejo-runner's patterns, applied to a line without its newline.
_GA = re.compile(r"^::([^ ]+)( (.+))?::([^\r\n]*)$")
_ADO = re.compile(r"^##\[([^ ]+)( (.+))?\]([^\r\n]*)$")

#: Command files, by the suffix of their variable (``GITHUB_OUTPUT`` …).
FILES = {
    "OUTPUT": "outputcmd.txt",
    "STATE": "statecmd.txt",
    "PATH": "pathcmd.txt",
    "ENV": "envs.txt",
    "STEP_SUMMARY": "SUMMARY.md",
}


class CommandSink(Protocol):
    """Where commands land: the scope the step runs in (``state.Scope``)."""

    def set_env(self, name: str, value: str) -> None: ...

    def set_output(self, name: str, value: str) -> None: ...

    def add_path(self, path: str) -> None: ...

    def save_state(self, name: str, value: str) -> None: ...


@attrs.frozen
class Command:
    name: str
    properties: dict[str, str]
    data: str


def _unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    return (
        text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
        .replace("%2C", ",").replace("%25", "%")
    )


def parse_command(line: str) -> Command | None:
    """The command in ``line``, or None (GitHub ``::x k=v::data`` or ``##[x k=v;]data``)."""
    match = _GA.match(line)
    separator = ","
    if match is None:
        match = _ADO.match(line)
        separator = ";"
        if match is None:
            return None
    properties: dict[str, str] = {}
    for pair in (match.group(3) or "").split(separator):
        parts = pair.split("=")
        if len(parts) == 2:
            properties[parts[0]] = parts[1]
    return Command(
        name=match.group(1),
        properties={k: _unescape_property(v) for k, v in properties.items()},
        data=match.group(4),
    )


@attrs.define
class CommandHandler:
    """Acts on the commands in one stage's output, line by line, then passes each line on."""

    sink: CommandSink
    show: Callable[[str], None]
    _resume: str = ""

    def line(self, line: str) -> None:
        command = parse_command(line)
        if command is not None:
            self._apply(command)
        self.show(line)

    def _apply(self, command: Command) -> None:
        if self._resume:
            if command.name == self._resume:
                self._resume = ""
            return
        data = _unescape_data(command.data)
        name = command.properties.get("name", "")
        if command.name == "set-env":
            self.sink.set_env(name, data)
        elif command.name == "set-output":
            self.sink.set_output(name, data)
        elif command.name == "add-path":
            self.sink.add_path(data)
        elif command.name == "save-state":
            self.sink.save_state(name, data)
        elif command.name == "stop-commands":
            self._resume = data


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """``NAME=value`` and heredoc entries, in order; ValueError on a malformed line."""
    entries: list[tuple[str, str]] = []
    lines = iter(line.removesuffix("\r") for line in text.split("\n"))
    for line in lines:
        if not line:
            continue
        equals = line.find("=")
        heredoc = line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            entries.append((line[:equals], line[equals + 1 :]))
        elif heredoc >= 0:
            delimiter = line[heredoc + 2 :]
            content: list[str] = []
            for body in lines:
                if body == delimiter:
                    break
                content.append(body)
            else:
                raise ValueError(
                    f"invalid format delimiter '{delimiter}' not found before end of file"
                )
            entries.append((line[:heredoc], "\n".join(content)))
        else:
            raise ValueError(f"invalid format '{line}', expected a line with '=' or '<<'")
    return entries


def prepare_files(directory: Path) -> dict[str, str]:
    """Create the empty command files; the variables that point to them."""
    directory.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    for suffix, name in FILES.items():
        path = directory / name
        path.write_bytes(b"")
        path.chmod(0o666)
        env[f"GITHUB_{suffix}"] = env[f"FORGEJO_{suffix}"] = str(path)
    return env


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def apply_files(directory: Path, sink: CommandSink) -> list[str]:
    """Read the command files back into ``sink`` (env, state, output, path); the errors."""
    errors: list[str] = []
    for suffix, apply in (
        ("ENV", sink.set_env),
        ("STATE", sink.save_state),
        ("OUTPUT", sink.set_output),
    ):
        try:
            for name, value in parse_env_file(_read(directory / FILES[suffix])):
                apply(name, value)
        except ValueError as exc:
            errors.append(f"GITHUB_{suffix}: {exc}")
    for line in _read(directory / FILES["PATH"]).split("\n"):
        line = line.removesuffix("\r")
        if line:
            sink.add_path(line)
    return errors
