"""Fuzzing the whole service: generated FetchTask answers to a running ``Service``.

Two connections share three slots; each talks to its own fake Forgejo over loopback
HTTP that answers FetchTask from a generated script — tasks (more than asked for,
with nonsense in ``context`` and ``secrets``), edited or arbitrary JSON, broken bytes,
Connect errors and HTTP statuses, wrong content types, dropped connections, answers
that never come — and UpdateTask/UpdateLog with some generated garbage first. Every
example runs on a MockClock; afterwards the service drains.

What must hold: no exception escapes the service; once it has drained every
connection holds no slot (``held == 0``, all ``capacity`` slots free), no request key
or task id is left in the state files, and every task the client received in a
decodable answer got a final result on its server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.errors import DecodeError, RpcError
from scheduler.keys import KeyStore
from scheduler.protocol import FetchTaskResponse, Result, RunnerClient, TaskState
from tests.support.config import write_config
from tests.support.fake_forgejo import FakeForgejo, fake_connection
from tests.support.harness import fast_tmpdir, plain_http_client, running_service
from tests.support.polling import wait_for
from tests.support.profiles import examples
from tests.support.rawhttp import RawRequest, Stream, http_response, serve_raw
from tests.support.strategies import (
    FETCH_TEMPLATES,
    UPDATE_LOG_TEMPLATES,
    UPDATE_TASK_TEMPLATES,
    Nasty,
    json_values,
    mutated,
    raw_bodies,
    seeds,
    str_maps,
    templates,
)

# A generated body can be megabytes: hypothesis may warn that its repr is large, which
# the suite's "warnings are errors" would turn into a failure of a passing example.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")


CAPACITY = 3


def payload(seconds: int) -> str:
    job = f"jobs:\n  j:\n    steps:\n      - run: echo hi\n      - run: sleep {seconds}\n"
    return base64.b64encode(job.encode()).decode()


@attrs.frozen
class Step:
    """One FetchTask answer of the script."""

    kind: str  # tasks | doc | raw | status | ctype | drop | stall
    tasks: tuple[tuple[int, dict[str, str], dict[str, Any]], ...] = ()  # (seconds, secrets, ctx)
    body: bytes = b""
    status: int = 200


steps = st.one_of(
    st.builds(lambda t: Step("tasks", tasks=tuple(t)),
              st.lists(st.tuples(st.integers(0, 5), str_maps,
                                 st.dictionaries(st.sampled_from(["event", "job", "x"]),
                                                 json_values, max_size=2)),
                       min_size=1, max_size=5)),
    st.builds(lambda d: Step("doc", body=json.dumps(d).encode()),
              st.one_of(mutated(templates(FETCH_TEMPLATES)), json_values)),
    st.builds(lambda seed: Step("doc", body=_seeded(seed)), seeds),
    st.builds(lambda b: Step("raw", body=b), raw_bodies(st.sampled_from(FETCH_TEMPLATES))),
    st.builds(lambda s, b: Step("status", status=s, body=b),
              st.sampled_from([400, 401, 403, 404, 409, 429, 500, 502, 503]),
              st.sampled_from([b"", b'{"code":"unavailable"}', b'{"code":"unauthenticated"}',
                               b'{"code":"resource_exhausted","message":"slow down"}',
                               b"<html>proxy</html>", b'{"code":' * 5000])),
    st.just(Step("ctype", body=b'{"task":{"id":"5"}}')),
    st.just(Step("drop")),
    st.just(Step("stall")),
)


def _seeded(seed: int) -> bytes:
    nasty = Nasty(seed)
    return json.dumps(nasty.document(FETCH_TEMPLATES)).encode()


report_noise = st.lists(
    st.one_of(
        st.sampled_from([
            http_response(503, b'{"code":"unavailable"}'),
            http_response(200, b"not json"),
            http_response(200, b"{}", "text/html"),
            http_response(200, b'{"ackIndex":"-5"}'),
            http_response(200, b'{"ackIndex":"99999"}'),
            http_response(200, b'{"state":{"id":"1","result":"RESULT_CANCELLED"}}'),
            http_response(409, b'{"code":"already_exists","message":"archived"}'),
            b"",
        ]),
        st.builds(lambda d: http_response(200, json.dumps(d).encode()),
                  st.one_of(mutated(templates(UPDATE_TASK_TEMPLATES)),
                            mutated(templates(UPDATE_LOG_TEMPLATES)))),
    ),
    max_size=6,
)


@attrs.define
class Scripted:
    """A fake Forgejo whose FetchTask answers follow a script, then are empty."""

    fake: FakeForgejo
    script: list[Step]
    next_id: Callable[[], int]
    delivered: set[int] = attrs.field(factory=set)

    async def fetch(self, stream: Stream, req: RawRequest) -> None:
        if not self.script:
            await stream.send_all(http_response(200, b'{"tasksVersion":"1"}'))
            return
        step = self.script.pop(0)
        if step.kind == "drop":
            return
        if step.kind == "stall":
            await trio.sleep_forever()  # the client gives up at fetch_timeout
        if step.kind == "status":
            ctype = "application/json" if step.body.startswith(b"{") else "text/html"
            await stream.send_all(http_response(step.status, step.body, ctype))
            return
        if step.kind == "ctype":
            await stream.send_all(http_response(200, step.body, "text/plain"))
            return
        body = step.body
        if step.kind == "tasks":
            tasks = [
                {"id": str(self.next_id()), "workflowPayload": payload(seconds),
                 "secrets": secrets, "context": context}
                for seconds, secrets, context in step.tasks
            ]
            body = json.dumps({"task": tasks[0], "additionalTasks": tasks[1:],
                               "tasksVersion": "2"}).encode()
        try:
            decoded = FetchTaskResponse.from_json(json.loads(body))
            self.delivered.update(t.id for t in decoded.tasks)
        except (ValueError, RecursionError, DecodeError):
            pass
        await stream.send_all(http_response(200, body))


async def scenario(root: Path, scripts: list[list[Step]], noise: list[list[bytes]]) -> None:
    counter = iter(range(1000, 10**6))
    servers: dict[str, Scripted] = {}
    async with trio.open_nursery() as nursery:
        conns = {}
        for name, script, garbage in zip("ab", scripts, noise, strict=True):
            fake = FakeForgejo(uuid=f"uuid-{name}", report_noise=list(garbage))
            scripted = Scripted(fake, list(script), lambda: next(counter))
            fake.fetch = scripted.fetch
            servers[name] = scripted
            port = await nursery.start(serve_raw, fake.handle)
            conns[name] = fake_connection(fake, port)
        config = write_config(root / "config.toml", conns, capacity=CAPACITY,
                              fetch_interval="2s", fetch_timeout="10s", shutdown_timeout="5m")
        async with running_service(config, client_factory=plain_http_client) as service:
            await wait_for(lambda: all(not s.script for s in servers.values()), within=7200,
                           poll=1)
            # Let what the last answers started finish, then drain.
            await wait_for(lambda: all(
                service.ledger.running(n) == 0 and service.loops[n].pending is None
                for n in service.loops), within=7200, poll=1)
            service.request_stop()
            await wait_for(lambda: service.phase == "stopped", within=600, poll=1)
            for name in "ab":
                assert service.ledger.held(name) == 0, name
                assert service.ledger.reserved(name) == 0, name
            assert service.ledger.free == CAPACITY
        nursery.cancel_scope.cancel()
    for name, scripted in servers.items():
        state = KeyStore(root / "state", name).load()
        assert state.pending is None and state.running == (), (name, state)
        missing = scripted.delivered - set(scripted.fake.final)
        assert not missing, f"{name}: delivered but never reported final: {missing}"


@settings(deadline=None, max_examples=examples(20), suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    scripts=st.lists(st.lists(steps, max_size=6), min_size=2, max_size=2),
    noise=st.lists(report_noise, min_size=2, max_size=2),
)
def test_fuzzed_fetch_answers_never_leak_a_slot(
    scripts: list[list[Step]], noise: list[list[bytes]],
) -> None:
    with fast_tmpdir() as tmp:
        trio.run(scenario, Path(tmp), scripts, noise,
                 clock=trio.testing.MockClock(autojump_threshold=0))



async def test_the_fake_books_a_final_result_it_claims() -> None:
    """The oracle above ("every delivered task got a final result on its server") is
    only as honest as the fake: a report answer that tells the runner a task is done
    (here: stopped by the server) must be in the fake's books. Found by the fuzzer: a
    final report answered so was counted as lost."""
    claim = http_response(200, b'{"state": {"id": "42", "result": "RESULT_CANCELLED"}}')
    fake = FakeForgejo(report_noise=[http_response(503, b'{"code":"unavailable"}'), claim])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_raw, fake.handle)
        client = RunnerClient(f"http://127.0.0.1:{port}", uuid=fake.uuid, token=fake.token,
                              timeout=10, verify=False)
        with pytest.raises(RpcError):
            await client.update_task(TaskState(id=42))
        assert fake.final == {}  # a refusal claims nothing
        first = await client.update_task(TaskState(id=42))  # a heartbeat, answered "stopped"
        assert first.result is Result.CANCELLED and fake.final == {42: "RESULT_CANCELLED"}
        # Its honest answers agree from then on, whatever the runner reports.
        final = await client.update_task(TaskState(id=42, result=Result.SUCCESS))
        assert final.result is Result.CANCELLED and fake.final == {42: "RESULT_CANCELLED"}
        # Spelt the other proto3 JSON way (numbers for the id and the enum), as the
        # fuzzer did: the runner reads it as "success", so the books say so too.
        fake.report_noise.append(http_response(200, b'{"state": {"id": 43, "result": 1}}'))
        other = await client.update_task(TaskState(id=43, result=Result.SUCCESS))
        assert other.result is Result.SUCCESS and fake.final[43] == "RESULT_SUCCESS"
        await client.aclose()
        nursery.cancel_scope.cancel()
