"""Workflow commands: one parser, one stop-commands state for what a line shows and does."""

from __future__ import annotations

from typing import Any

import attrs

from scheduler.protocol import Task
from scheduler.task.commands import parse_command
from scheduler.task.log import TaskLog


def task_log(**task: Any) -> TaskLog:
    return TaskLog(Task(id=1, **task), connection="c")


def contents(log: TaskLog) -> list[str]:
    return [r.content for r in log.unsent()[1]]  # late masks applied, as when sent


def test_parse_command() -> None:
    cmd = parse_command("::set-output name=x,other=a%3Ab%2Cc::v%0A%25w")
    assert cmd is not None
    assert (cmd.name, cmd.properties, cmd.data) == (
        "set-output", {"name": "x", "other": "a:b,c"}, "v%0A%25w"
    )
    ado = parse_command("##[set-env name=A;x=y]value")
    assert ado is not None and (ado.name, ado.properties, ado.data) == (
        "set-env", {"name": "A", "x": "y"}, "value"
    )
    assert parse_command("no command") is None
    assert parse_command(":: spaced::x") is None


def test_the_name_ends_at_the_first_double_colon() -> None:
    mask = parse_command("::add-mask::a::b")
    assert mask is not None and (mask.name, mask.data) == ("add-mask", "a::b")
    token = parse_command("::a:b::")
    assert token is not None and (token.name, token.data) == ("a:b", "")


@attrs.define
class Sink:
    calls: list[tuple[str, str, str]] = attrs.field(factory=list)

    def set_env(self, name: str, value: str) -> None:
        self.calls.append(("env", name, value))

    def set_output(self, name: str, value: str) -> None:
        self.calls.append(("output", name, value))

    def add_path(self, path: str) -> None:
        self.calls.append(("path", path, ""))

    def save_state(self, name: str, value: str) -> None:
        self.calls.append(("state", name, value))


def test_a_stream_applies_the_step_commands_and_shows_their_lines() -> None:
    sink, log = Sink(), task_log()
    stream = log.commands(sink)
    lines = [
        "::set-output name=a::1%0A2",
        "::set-env name=B::x",
        "::add-path::/opt/bin",
        "::save-state name=s::st",
        "::stop-commands::tok",
        "::set-env name=IGNORED::y",
        "::tok::",
        "::set-output name=c::3",
        "plain",
    ]
    for line in lines:
        stream.line(line)
    # Every line is shown but stop-commands and its resume token.
    assert contents(log) == [line for line in lines if line not in lines[4:7:2]]
    assert sink.calls == [
        ("output", "a", "1\n2"), ("env", "B", "x"), ("path", "/opt/bin", ""),
        ("state", "s", "st"), ("output", "c", "3"),
    ]


def test_workflow_commands() -> None:
    log = task_log(secrets={"ACTIONS_STEP_DEBUG": "false"})
    log.output("::debug::hidden\n::group::G\n::endgroup::\n::warning file=x::careful")
    log.output("::stop-commands::tok123\n::add-mask::not-a-mask\n::group::literal\n::tok123::")
    log.output("::add-mask::now-masked\nnot-a-mask now-masked")
    assert contents(log) == [
        "##[group]G", "##[endgroup]", "::warning file=x::careful",
        "::add-mask::not-a-mask", "::group::literal", "not-a-mask ***",
    ]
    debug = task_log(secrets={"ACTIONS_STEP_DEBUG": "true"})
    debug.output("::debug::shown")
    assert contents(debug) == ["shown"]


def test_resume_token_with_data_resumes_the_log_and_the_step() -> None:
    """forgejo-runner resumes on a command *named* like the token, whatever follows
    (``act/runner/command.go``, ``internal/pkg/report/reporter.go``). The log once
    resumed only on the exact line ``::tok::``: after ``::tok::resume`` the step's
    commands worked again but ``::add-mask::`` was shown and not registered."""
    sink, log = Sink(), task_log()
    stream = log.commands(sink)
    for line in [
        "::stop-commands::tok",
        "::add-mask::early",
        "::tok::resume",
        "::add-mask::secret",
        "::set-env name=A::1",
        "printed: secret",
    ]:
        stream.line(line)
    assert contents(log) == ["::add-mask::early", "::set-env name=A::1", "printed: ***"]
    assert sink.calls == [("env", "A", "1")]
    log.log("later: secret, early")
    assert contents(log)[-1] == "later: ***, early"


def test_stop_commands_last_for_one_process_only() -> None:
    sink, log = Sink(), task_log()
    first = log.commands(sink)
    first.line("::stop-commands::tok")
    first.line("::set-env name=A::1")
    second = log.commands(sink)
    second.line("::set-env name=B::2")
    second.line("::add-mask::hidden")
    assert sink.calls == [("env", "B", "2")]
    assert contents(log) == ["::set-env name=A::1", "::set-env name=B::2"]


def test_legacy_form_acts_on_the_step_and_is_shown_verbatim() -> None:
    sink, log = Sink(), task_log()
    stream = log.commands(sink)
    for line in ["##[set-env name=A]1", "##[add-mask]v", "##[group]g", "v"]:
        stream.line(line)
    assert sink.calls == [("env", "A", "1")]
    assert contents(log) == ["##[set-env name=A]1", "##[add-mask]v", "##[group]g", "v"]
