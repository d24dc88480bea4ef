"""Workflow commands in the output of a step's process: parsed here, and only here.

A line such as ``::set-output name=x::v`` does two things in forgejo-runner, in two
places: what the *step* does (``act/runner/command.go``: ``set-env``, ``set-output``,
``add-path``, ``save-state``) and what the *log* shows (``internal/pkg/report/
reporter.go``, ``handleCommand``: ``add-mask`` hidden and registered, ``debug`` hidden
unless ``ACTIONS_STEP_DEBUG``, ``group``/``endgroup`` rewritten to ``##[group]``/
``##[endgroup]``). Here one :class:`CommandStream` per process reads each line once
and decides both, with one ``::stop-commands::`` state, so the two cannot disagree.

``::stop-commands::tok`` suspends every command until a command *named* ``tok``
(``::tok::`` followed by anything), which resumes them and is hidden, as in both of
forgejo-runner's handlers (``case resumeCommand`` in ``act/runner/command.go``,
``case r.stopCommandEndToken`` in ``internal/pkg/report/reporter.go``). Suspended
command lines are shown verbatim. The state belongs to one process's output, as
forgejo-runner's ``commandHandler`` (one per step): a step that never resumes does
not silence the next one.

The grammar (one for both jobs): ``::name k=v,k=v::data``, where the name ends at a
space or at the first ``::`` (as GitHub's runner; forgejo-runner's two regexes differ
only on names with colons), and the legacy ``##[name k=v;k=v]data`` of
``act/runner/command.go``. Only the ``::`` form changes what the log shows (the
reporter's ``cmdRegex`` knows no other); both forms act on the step. Data is
unescaped (``%25 %0D %0A``, properties also ``%3A %2C``) for the step's commands; the
log's ``add-mask`` and ``debug`` take the data verbatim, as forgejo-runner's reporter.
"""

from __future__ import annotations

import re
from typing import Protocol

import attrs

_GA = re.compile(r"^::([^ :]+(?::[^ :]+)*)(?: (.*))?::(.*)$")
_ADO = re.compile(r"^##\[([^ ]+)( (.+))?\]([^\r\n]*)$")


class CommandSink(Protocol):
    """What the step's commands change: the scope the step runs in (``state.Scope``)."""

    def set_env(self, name: str, value: str) -> None: ...

    def set_output(self, name: str, value: str) -> None: ...

    def add_path(self, path: str) -> None: ...

    def save_state(self, name: str, value: str) -> None: ...


class LogRows(Protocol):
    """Where the lines go: the task's log (:class:`~scheduler.task.log.TaskLog`)."""

    def log(self, text: str) -> None: ...

    def add_mask(self, value: str) -> None: ...


@attrs.frozen
class Command:
    name: str
    properties: dict[str, str]
    data: str  # as written (escaped)
    legacy: bool = False  # the ``##[name]data`` form


def _unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    return (
        text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
        .replace("%2C", ",").replace("%25", "%")
    )


def parse_command(line: str) -> Command | None:
    """The command in ``line``, or None (``::x k=v::data`` or ``##[x k=v;]data``)."""
    legacy = False
    match = _GA.match(line)
    separator = ","
    if match is not None:
        name, props, data = match.group(1), match.group(2), match.group(3)
    else:
        match = _ADO.match(line)
        if match is None:
            return None
        legacy, separator = True, ";"
        name, props, data = match.group(1), match.group(3), match.group(4)
    properties: dict[str, str] = {}
    for pair in (props or "").split(separator):
        parts = pair.split("=")
        if len(parts) == 2:
            properties[parts[0]] = _unescape_property(parts[1])
    return Command(name=name, properties=properties, data=data, legacy=legacy)


@attrs.define
class CommandStream:
    """The output of one process, line by line: commands applied, rows written.

    ``sink`` None: the commands that act on a step are ignored (an executor without
    steps' scopes, such as the simulated one); what the log shows is the same.
    """

    rows: LogRows
    sink: CommandSink | None = None
    debug: bool = False
    _resume: str = ""

    def line(self, line: str) -> None:
        command = parse_command(line)
        if command is None:
            self.rows.log(line)
        elif self._resume:
            if command.name != self._resume:
                self.rows.log(line)
                return
            self._resume = ""
            if command.legacy:
                self.rows.log(line)
        else:
            self._apply(command, line)

    def _apply(self, command: Command, line: str) -> None:
        name = command.name
        if name == "stop-commands":
            self._resume = _unescape_data(command.data)
        elif self.sink is not None and name in ("set-env", "set-output", "add-path", "save-state"):
            data = _unescape_data(command.data)
            key = command.properties.get("name", "")
            if name == "set-env":
                self.sink.set_env(key, data)
            elif name == "set-output":
                self.sink.set_output(key, data)
            elif name == "add-path":
                self.sink.add_path(data)
            else:
                self.sink.save_state(key, data)
        shown = line if command.legacy else self._shown(command, line)
        if shown is not None:
            self.rows.log(shown)

    def _shown(self, command: Command, line: str) -> str | None:
        """The row for a ``::`` command line; None hides it."""
        if command.name == "add-mask":
            self.rows.add_mask(command.data)
            return None
        if command.name == "debug":
            return command.data if self.debug else None
        if command.name == "group":
            return f"##[group]{command.data}"
        if command.name == "endgroup":
            return "##[endgroup]"
        if command.name == "stop-commands":
            return None
        return line
