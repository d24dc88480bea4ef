"""A thin Connect (unary, JSON) client for ``runner.v1.RunnerService`` over httpx.

One :class:`RunnerClient` per Forgejo connection, opened inside the trio run. Every
call is bounded as a whole by ``trio.fail_after`` (httpx timeouts are per network
operation, so a server trickling bytes would otherwise hold a call forever) and by
a response size limit.

Failures come out as two kinds, because the fetch loop must tell them apart
(the tree is drawn in :mod:`scheduler.errors`):

* ``ConnectError`` — the server answered with a Connect error code.
  ``RpcError.outcome_unknown`` says whether the request may have had an effect.
* a ``TransportFailure`` subclass — no usable answer (timeout, reset, refused, garbage,
  oversized). The request may or may not have been processed: always "unknown".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
import trio

from scheduler import __version__
from scheduler.errors import (
    ConnectError,
    DecodeError,
    MalformedAnswer,
    OversizedAnswer,
    RpcTimeout,
    TransportBroken,
)
from scheduler.protocol import messages as m

T = TypeVar("T")
log = logging.getLogger(__name__)

SERVICE = "runner.v1.RunnerService"
USER_AGENT = f"forgejo-scheduler/{__version__}"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# connect-go's httpToCode, for error answers that carry no Connect JSON body
# (a proxy's HTML page, an empty 404...). Source: protocol.md §1.4.
_HTTP_TO_CODE = {
    400: "internal",
    401: "unauthenticated",
    403: "permission_denied",
    404: "unimplemented",
    429: "unavailable",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}

def _why(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and of the deepest cause that says more.

    httpx's messages alone are poor: a TLS failure is an empty ``ConnectError`` (the
    reason is an ``ssl.SSLCertVerificationError`` down the cause chain), a refused
    connection is "all attempts to connect to H:P failed" (the ``ConnectionRefusedError``
    is inside an exception group).
    """
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail: BaseException | None = None
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
            continue
        if str(cause) and str(cause) != str(exc):
            detail = cause
        cause = cause.__cause__ or cause.__context__
    if detail is not None:
        text = f"{text}: {type(detail).__name__}: {detail}"
    return text[:300]  # a library's message may quote what the server sent


def ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext | bool:
    """TLS verification is on by default; ``ca_file`` trusts a private CA (instead of the
    system store).

    A ``ca_file`` that cannot be loaded (not PEM, unreadable) fails closed: the context
    verifies against no CA at all, so every handshake with that server fails and its
    connection goes down with a clear line, while the other connections run on. Raising
    here would take the whole service down for one connection's file.
    """
    if insecure:
        return False
    if ca_file:
        return _ca_context(ca_file)
    return _default_context()


@functools.cache
def _default_context() -> ssl.SSLContext:
    """One verifying context for every connection: httpx would load the CA bundle into a
    new context per client, about 0.9 MiB each (measured by bench figure 6b)."""
    return httpx.create_ssl_context(trust_env=False)


@functools.cache
def _ca_context(ca_file: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error(
            "ca_file %s cannot be loaded (%s); TLS connections that rely on it will "
            "fail certificate verification", ca_file, exc,
        )
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts nothing


class RunnerClient:
    """The RPCs of one runner registration on one Forgejo."""

    def __init__(
        self,
        base_url: str,
        *,
        uuid: str,
        token: str,
        timeout: float,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/api/actions/"
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "x-runner-uuid": uuid,
                "x-runner-token": token,
                "user-agent": USER_AGENT,
                "connect-protocol-version": "1",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            verify=verify,
            transport=transport,
            trust_env=False,
        )
        # Absolute URLs per method, parsed once: httpx would parse and merge the
        # relative one with base_url on every request (a profiled hot spot, bench fig. 6).
        self._urls: dict[str, httpx.URL] = {}

    async def __aenter__(self) -> RunnerClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- RPCs --------------------------------------------------------------------

    async def declare(self, version: str, labels: tuple[str, ...]) -> m.Runner:
        data = await self.call("Declare", m.declare_request(version, labels))
        return m.decode_runner_response(data, "DeclareResponse")

    async def register(
        self, name: str, registration_token: str, version: str, labels: tuple[str, ...]
    ) -> m.Runner:
        body = m.register_request(name, registration_token, version, labels)
        data = await self.call("Register", body)
        return m.decode_runner_response(data, "RegisterResponse")

    async def fetch_task(
        self, *, tasks_version: int, task_capacity: int, request_key: str
    ) -> m.FetchTaskResponse:
        data = await self.call(
            "FetchTask",
            m.fetch_task_request(tasks_version, task_capacity),
            headers={"x-runner-request-key": request_key},
        )
        return self._decode(m.FetchTaskResponse.from_json, data)

    async def update_task(
        self, state: m.TaskState, outputs: Mapping[str, str] | None = None
    ) -> m.UpdateTaskResponse:
        data = await self.call("UpdateTask", m.update_task_request(state, outputs or {}))
        resp = self._decode(m.UpdateTaskResponse.from_json, data)
        if resp.task_id != state.id:
            # Forgejo always answers with the task's own state; anything else (an empty
            # object, another message) is not an acknowledgement of this update.
            raise MalformedAnswer(
                f"UpdateTask: the answer is about task {resp.task_id}, not {state.id}"
            )
        return resp

    async def update_log(
        self, task_id: int, index: int, rows: tuple[m.LogRow, ...], no_more: bool
    ) -> int:
        data = await self.call("UpdateLog", m.update_log_request(task_id, index, rows, no_more))
        ack = self._decode(m.decode_ack_index, data)
        if ack < 0:
            raise MalformedAnswer(f"UpdateLog: negative ackIndex {ack}")
        return ack

    # --- plumbing ----------------------------------------------------------------

    @staticmethod
    def _decode(fn: Callable[[Any], T], data: Any) -> T:
        try:
            return fn(data)
        except DecodeError as exc:
            raise MalformedAnswer(str(exc)[:500]) from None

    async def call(
        self, method: str, body: m.JSON, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """POST one unary Connect request; the decoded JSON answer, or an RpcError."""
        content = json.dumps(body, separators=(",", ":")).encode()
        request_headers = {"content-type": "application/json", **(headers or {})}
        url = self._urls.get(method)
        if url is None:
            url = self._urls[method] = self._http.base_url.join(f"{SERVICE}/{method}")
        try:
            with trio.fail_after(self.timeout):
                async with self._http.stream(
                    "POST", url, content=content, headers=request_headers
                ) as resp:
                    raw = await self._read_limited(resp)
        except trio.TooSlowError:
            detail = f"{method}: no answer within {self.timeout:g}s"
            raise RpcTimeout(detail) from None
        except httpx.TimeoutException as exc:
            raise RpcTimeout(f"{method}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise TransportBroken(f"{method}: {_why(exc)}") from None
        except httpx.DecodingError as exc:
            # A content-encoding (gzip, deflate...) whose body does not decode.
            raise MalformedAnswer(f"{method}: {_why(exc)}") from None
        except httpx.HTTPError as exc:  # anything else httpx can raise about an answer
            raise TransportBroken(f"{method}: {_why(exc)}") from None
        return self._interpret(method, resp, raw)

    async def _read_limited(self, resp: httpx.Response) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise OversizedAnswer(f"answer of {declared} bytes, limit {self.max_response_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        body = resp.aiter_bytes()
        async with contextlib.aclosing(body):  # type: ignore[type-var]
            async for chunk in body:
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise OversizedAnswer(f"answer larger than {self.max_response_bytes} bytes"
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(self, method: str, resp: httpx.Response, raw: bytes) -> Any:
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if resp.status_code == 200:
            if ctype != "application/json":
                shown = ctype[:80] or "none"
                raise MalformedAnswer(f"{method}: content type {shown!r}")
            if not raw:
                # protojson writes "{}" for an empty message; zero bytes come from something
                # else (a proxy). Taken as "no tasks", it would drop a key whose tasks the
                # server may have assigned.
                raise MalformedAnswer(f"{method}: empty answer")
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                # RecursionError: nesting deeper than the interpreter's stack ("[[[[...").
                raise MalformedAnswer(f"{method}: invalid JSON") from None
            if not isinstance(data, dict):
                raise MalformedAnswer(f"{method}: answer is not a JSON object")
            return data
        code, message = _HTTP_TO_CODE.get(resp.status_code, "unknown"), ""
        if ctype == "application/json":
            try:
                err = json.loads(raw)
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    code = err["code"][:100]
                    text = err.get("message")
                    message = text[:500] if isinstance(text, str) else ""
            except (ValueError, RecursionError):
                pass
        if not message:
            message = f"HTTP {resp.status_code}"
        raise ConnectError(code, message, resp.status_code)
