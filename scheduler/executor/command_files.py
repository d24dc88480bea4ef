"""The ``GITHUB_*`` command files of a step: created before, read back after.

Before every stage of a step the runner creates empty ``GITHUB_OUTPUT``,
``GITHUB_STATE``, ``GITHUB_PATH``, ``GITHUB_ENV`` and ``GITHUB_STEP_SUMMARY`` files
(each also as ``FORGEJO_*``), and reads them back afterwards, even when the step
failed (forgejo-runner, executor.md §3). The other channel, command lines in the
step's output (``::set-output::`` …), is parsed in ``scheduler.task.commands``.

The env-file format (``act/container/parse_env_file.go``): ``NAME=value`` (split at the
first ``=`` when it comes before any ``<<``) or ``NAME<<DELIM`` followed by lines up to
a line that is exactly ``DELIM``. Other lines are an error. forgejo-runner also fails
on blank lines; they are skipped here, as GitHub's runner does.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.task.commands import CommandSink

#: Command files, by the suffix of their variable (``GITHUB_OUTPUT`` …).
FILES = {
    "OUTPUT": "outputcmd.txt",
    "STATE": "statecmd.txt",
    "PATH": "pathcmd.txt",
    "ENV": "envs.txt",
    "STEP_SUMMARY": "SUMMARY.md",
}


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
