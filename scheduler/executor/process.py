"""Running one program of a job: its own process group, output line by line, bounded stop.

Every step process starts in its own process group, so the whole group can be
signalled: on cancel or timeout TERM, then KILL after a grace period; after a normal
exit KILL, so a ``cmd &`` left behind cannot keep the output pipe open
(python-stack.md §6). Output is read from one pipe (stdout and stderr merged, as
forgejo-runner does), line by line, and passed on as it arrives. Pipes rather than a
PTY: forgejo-runner gives host processes a terminal; programs here see none.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import attrs
import trio

#: A line longer than this without a newline is passed on in pieces.
MAX_LINE_BYTES = 1024 * 1024


@attrs.frozen
class CommandResult:
    returncode: int | None
    timed_out: bool


async def kill_group(proc: trio.Process, grace: float) -> None:
    """TERM the process group, KILL it if the leader is still there after ``grace``."""
    _killpg(proc.pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        await proc.wait()
        return
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    time_limit: float | None = None,
    kill_grace: float = 10.0,
    drain_timeout: float = 5.0,
) -> CommandResult:
    """Run ``argv`` in a new process group, passing each output line to ``on_line``.

    Returns when the process has exited and its output is read. After ``time_limit`` the
    group is stopped (TERM, then KILL after ``kill_grace``) and ``timed_out`` is set.
    When cancelled from outside, the group is stopped the same way before
    ``trio.Cancelled`` propagates. The reader is not in the cancelled scope, so the
    tail of the output is kept; it gets ``drain_timeout`` after the group is gone,
    because a process that escaped the group (``setsid``) may still hold the pipe.
    """
    reader_done = trio.Event()
    start_error: OSError | None = None
    result = CommandResult(returncode=None, timed_out=False)
    async with trio.open_nursery() as nursery:
        try:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                    cwd=cwd,
                    env=dict(env),
                    process_group=0,
                    deliver_cancel=partial(kill_group, grace=kill_grace),
                )
            )
        except OSError as exc:
            # Kept for after the nursery, so the caller gets a plain OSError, not a group.
            start_error = exc
        else:
            assert proc.stdout is not None
            nursery.start_soon(_read_lines, proc.stdout, on_line, reader_done)
            try:
                with trio.move_on_after(math.inf if time_limit is None else time_limit) as scope:
                    await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        await kill_group(proc, kill_grace)
                    # Whatever the step left running in its group goes too (GitHub does so).
                    _killpg(proc.pid, signal.SIGKILL)
                    with trio.move_on_after(drain_timeout):
                        await reader_done.wait()
                nursery.cancel_scope.cancel()
            result = CommandResult(returncode=proc.returncode, timed_out=scope.cancelled_caught)
    if start_error is not None:
        raise start_error
    return result


async def _read_lines(
    stream: trio.abc.ReceiveStream, on_line: Callable[[str], None], done: trio.Event
) -> None:
    buffer = bytearray()
    try:
        async with stream:
            async for chunk in stream:
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    on_line(_decode(buffer[start:end]))
                    start = end + 1
                del buffer[:start]
                while len(buffer) > MAX_LINE_BYTES:
                    cut = MAX_LINE_BYTES
                    while cut > 0 and (buffer[cut] & 0xC0) == 0x80:
                        cut -= 1
                    on_line(_decode(buffer[:cut]))
                    del buffer[:cut]
            if buffer:
                on_line(_decode(buffer))  # a last line without a newline
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")
