"""Run ``forgejo-scheduler run`` as a real child process, for tests that signal or kill it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "scheduler"]


class Daemon:
    """One daemon process; its stderr is collected in ``log`` while it runs."""

    def __init__(self, config: Path, args: Sequence[str] = ()) -> None:
        self.config = config
        self.args = tuple(args)  # more options of ``run``
        self.log = b""
        self.proc: trio.Process | None = None
        self._eof = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        self.proc = await trio.lowlevel.open_process(
            [*CLI, "run", "--config", str(self.config), *self.args], cwd=ROOT,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        nursery.start_soon(self._collect)
        with trio.fail_after(30):
            while b"/metrics" not in self.log:
                await trio.sleep(0.05)

    async def _collect(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while chunk := await self.proc.stderr.receive_some(65536):
            self.log += chunk
        self._eof.set()

    @property
    def metrics_url(self) -> str:
        match = re.search(rb"http://127\.0\.0\.1:(\d+)/metrics", self.log)
        assert match, self.log.decode()[-2000:]
        return f"http://127.0.0.1:{int(match.group(1))}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, within: float = 60) -> int:
        assert self.proc is not None
        with trio.fail_after(within):
            code = await self.proc.wait()
            await self._eof.wait()
        return code
