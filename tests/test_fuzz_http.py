"""Fuzzing the client through real loopback HTTP: generated answers, bytes on a socket.

Each example runs one trio run on a MockClock with a raw server that writes a generated
response — any status, content type, framing (content-length right or wrong, chunked,
garbage chunks, close-delimited), content-encoding (gzip that is or is not gzip) and a
generated body — and one RPC of the real ``RunnerClient`` against it. The client must
come back with a value or an ``RpcError`` within its own time limit, never with another
exception and never later.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from functools import partial

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.errors import MalformedAnswer, RpcError, RpcTimeout
from scheduler.protocol import LogRow, RunnerClient, TaskState
from tests.support.profiles import examples
from tests.support.rawhttp import RawRequest, Stream, serve_raw
from tests.support.strategies import (
    FETCH_TEMPLATES,
    UPDATE_LOG_TEMPLATES,
    UPDATE_TASK_TEMPLATES,
    Nasty,
    fetch_documents,
    raw_bodies,
    seeds,
    update_log_documents,
    update_task_documents,
)

# A generated body can be megabytes: hypothesis may warn that its repr is large, which
# the suite's "warnings are errors" would turn into a failure of a passing example.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")


TIMEOUT = 5.0
FAST = settings(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

METHODS = ("FetchTask", "UpdateTask", "UpdateLog")
FRAMINGS = ("length", "length", "length", "chunked", "close", "short-length", "long-length",
            "bad-chunked", "reset-midway", "no-answer")
ENCODINGS = (None, None, None, "gzip", "gzip-garbage", "deflate-garbage", "br", "x-unknown")
CONTENT_TYPES = ("application/json", "application/json", "application/json; charset=utf-8",
                 "text/html", None, "application/proto")


@attrs.frozen
class Answer:
    method: str
    status: int
    ctype: str | None
    framing: str
    encoding: str | None
    body: bytes

    def wire(self) -> tuple[bytes, bool]:
        """The bytes to send, and whether to keep the connection open afterwards."""
        body = self.body
        head = [f"HTTP/1.1 {self.status} Fuzz"]
        if self.ctype is not None:
            head.append(f"content-type: {self.ctype}")
        if self.encoding == "gzip":
            body = gzip.compress(body)
        elif self.encoding == "gzip-garbage":
            body = b"\x1f\x8b\x08\x00" + body[:50]
        elif self.encoding == "deflate-garbage":
            body = zlib.compress(body)[5:]
        if self.encoding is not None:
            head.append(f"content-encoding: {self.encoding.split('-')[0]}")
        keep_open = False
        if self.framing in ("length", "reset-midway"):
            head.append(f"content-length: {len(body)}")
        elif self.framing == "short-length":
            head.append(f"content-length: {len(body) + 10}")  # promises more than it sends
            keep_open = True
        elif self.framing == "long-length":
            head.append(f"content-length: {max(0, len(body) - 3)}")
        elif self.framing == "chunked":
            head.append("transfer-encoding: chunked")
            body = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else (
                b"0\r\n\r\n")
        elif self.framing == "bad-chunked":
            head.append("transfer-encoding: chunked")
            body = b"zz\r\n" + body
        else:  # close-delimited
            head.append("connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if self.framing == "reset-midway":
            data = data[: len(data) // 2]
        return data, keep_open


async def call(client: RunnerClient, method: str) -> object:
    if method == "FetchTask":
        return await client.fetch_task(tasks_version=1, task_capacity=2, request_key="k")
    if method == "UpdateTask":
        return await client.update_task(TaskState(id=42))
    return await client.update_log(42, 0, (LogRow(time=_T0, content="x"),), False)


_T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def exchange(answer: Answer) -> None:
    """One RPC against a server that sends ``answer``; asserts the contract."""
    data, keep_open = answer.wire()

    async def handler(stream: Stream, req: RawRequest) -> None:
        if answer.framing == "no-answer":
            await trio.sleep_forever()
        await stream.send_all(data)
        if keep_open:
            await trio.sleep_forever()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_raw, handler))
            client = RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="secret-token-x",
                                  timeout=TIMEOUT, verify=False, max_response_bytes=1 << 20)
            async with client:
                start = trio.current_time()
                try:
                    await call(client, answer.method)
                except RpcError as exc:
                    assert "secret-token-x" not in str(exc)
                    assert len(str(exc)) <= 700  # one log line, whatever the server sent
                    if answer.framing == "no-answer":
                        assert isinstance(exc, RpcTimeout)
                elapsed = trio.current_time() - start
                assert elapsed <= TIMEOUT + 0.5, elapsed  # bounded as a whole, on any server
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    method = draw(st.sampled_from(METHODS))
    docs = {"FetchTask": fetch_documents(), "UpdateTask": update_task_documents(),
            "UpdateLog": update_log_documents()}[method]
    return Answer(
        method=method,
        status=draw(st.sampled_from([200, 200, 200, 400, 401, 404, 429, 500, 503, 101, 204, 302])),
        ctype=draw(st.sampled_from(CONTENT_TYPES)),
        framing=draw(st.sampled_from(FRAMINGS)),
        encoding=draw(st.sampled_from(ENCODINGS)),
        body=draw(raw_bodies(docs)),
    )


@st.composite
def seeded_answers(draw: st.DrawFn) -> Answer:
    nasty = Nasty(draw(seeds))
    r = nasty.r
    method = r.choice(METHODS)
    bases = {"FetchTask": FETCH_TEMPLATES, "UpdateTask": UPDATE_TASK_TEMPLATES,
             "UpdateLog": UPDATE_LOG_TEMPLATES}[method]
    return Answer(
        method=method,
        status=200 if r.random() < 0.7 else r.choice([400, 401, 404, 429, 500, 503, 101, 204]),
        ctype=r.choice(CONTENT_TYPES),
        framing=r.choice(FRAMINGS),
        encoding=r.choice(ENCODINGS),
        body=nasty.body(nasty.document(bases)),
    )


@settings(FAST, max_examples=examples(80))
@given(answers())
def test_client_over_http_survives_generated_answers(answer: Answer) -> None:
    exchange(answer)


@settings(FAST, max_examples=examples(200))
@given(seeded_answers())
def test_client_over_http_survives_seeded_answers(answer: Answer) -> None:
    exchange(answer)


def test_undecodable_gzip_is_a_malformed_answer() -> None:
    """Found by this fuzzer: httpx.DecodingError is not a TransportError and escaped."""
    answer = Answer("FetchTask", 200, "application/json", "length", "gzip-garbage", b"{}" * 40)
    data, _ = answer.wire()
    caught: list[BaseException] = []

    async def handler(stream: Stream, req: RawRequest) -> None:
        await stream.send_all(data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_raw, handler))
            async with RunnerClient(f"http://127.0.0.1:{port}", uuid="u", token="t",
                                    timeout=TIMEOUT, verify=False) as client:
                try:
                    await call(client, "FetchTask")
                except RpcError as exc:
                    caught.append(exc)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    (exc,) = caught
    assert isinstance(exc, MalformedAnswer)
    assert exc.outcome_unknown
