"""Helpers for the executor corpus: git repositories of actions, served over loopback HTTP.

git's "dumb HTTP" protocol needs nothing but static files once ``git update-server-info``
has run in a bare repository, so a few lines of trio + h11 serve real ``git fetch``es.
No tests here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import attrs
import h11
import trio

GIT_ENV = {
    "GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@example.invalid",
    "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@example.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
}


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repository(
    root: Path, name: str, files: Mapping[str, str], tags: Sequence[str] = ("v1",)
) -> str:
    """A bare repository ``root/<owner>/<repo>`` ready for dumb HTTP; its commit SHA."""
    work = root / "_src" / name
    work.mkdir(parents=True)
    _git("init", "-q", "-b", "main", ".", cwd=work)
    for path, text in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if path.endswith(".sh"):
            target.chmod(0o755)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "action", cwd=work)
    for tag in tags:
        _git("tag", tag, cwd=work)
    bare = root / name
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    _git("update-server-info", cwd=bare)
    return _git("rev-parse", "HEAD", cwd=work)


@attrs.define
class StaticServer:
    """GET-only static files from ``root``; counts requests per path."""

    root: Path
    hits: dict[str, int] = attrs.field(factory=dict)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        task_status.started(f"http://127.0.0.1:{port}")
        await trio.serve_listeners(self._connection, listeners)

    def _response(self, target: str) -> tuple[int, bytes]:
        path = unquote(urlsplit(target).path)
        self.hits[path] = self.hits.get(path, 0) + 1
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return 404, b"not found\n"
        return 200, file.read_bytes()

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Request):
                    status, body = self._response(event.target.decode())
                    headers = [("content-length", str(len(body))),
                               ("content-type", "application/octet-stream")]
                    out = conn.send(h11.Response(status_code=status, headers=headers))
                    out += conn.send(h11.Data(data=body)) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    await stream.send_all(out or b"")
                elif isinstance(event, h11.EndOfMessage):
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                    else:
                        return
                else:  # ConnectionClosed, PAUSED or anything unexpected
                    return
