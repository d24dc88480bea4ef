"""Fuzzing the decoders of FetchTask, UpdateTask, UpdateLog and Declare answers.

Most examples call the decoders directly (and the client's own answer interpretation,
``RunnerClient._interpret``, on ``httpx.Response`` objects): thousands per second, so
the default run covers every field with nonsense. ``test_fuzz_http.py`` sends a
smaller number of the same bodies through real loopback HTTP.

The contract: a decoder returns a well-typed message or raises ``DecodeError``; the
client turns an answer into a value or an ``RpcError`` (``ConnectError`` or
``TransportFailure``), nothing else, ever.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.errors import (
    DEFINITE_CODES,
    ConnectError,
    DecodeError,
    MalformedAnswer,
    RpcError,
    TransportFailure,
)
from scheduler.protocol import FetchTaskResponse, Result, RunnerClient, Task, UpdateTaskResponse
from scheduler.protocol.messages import decode_ack_index, decode_runner_response, decode_time
from tests.support.profiles import examples
from tests.support.strategies import (
    DECLARE_TEMPLATES,
    FETCH_TEMPLATES,
    INT64_MAX,
    INT64_MIN,
    UPDATE_LOG_TEMPLATES,
    UPDATE_TASK_TEMPLATES,
    Nasty,
    fetch_documents,
    json_values,
    mutated,
    raw_bodies,
    seeds,
    templates,
    timestamps,
    update_log_documents,
    update_task_documents,
    valid_declare,
    valid_fetch,
    valid_update_log,
    valid_update_task,
)

# A generated body can be megabytes: hypothesis may warn that its repr is large, which
# the suite's "warnings are errors" would turn into a failure of a passing example.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")


FAST = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def check_task(task: Task) -> None:
    assert isinstance(task.id, int) and 1 <= task.id <= INT64_MAX
    assert isinstance(task.workflow_payload, bytes)
    assert isinstance(task.context, dict)
    assert _str_map(task.secrets) and _str_map(task.vars)
    for need in task.needs.values():
        assert _str_map(need.outputs) and isinstance(need.result, Result)
    assert "secrets" not in repr(task) and "context" not in repr(task)


def check_fetch(doc: object) -> FetchTaskResponse | None:
    try:
        resp = FetchTaskResponse.from_json(doc)
    except DecodeError:
        return None
    assert INT64_MIN <= resp.tasks_version <= INT64_MAX
    for task in resp.tasks:
        check_task(task)
    return resp


def check_update_task(doc: object) -> None:
    try:
        resp = UpdateTaskResponse.from_json(doc)
    except DecodeError:
        return
    assert INT64_MIN <= resp.task_id <= INT64_MAX
    assert isinstance(resp.result, Result)
    assert all(isinstance(k, str) for k in resp.sent_outputs)


def check_ack(doc: object) -> None:
    try:
        ack = decode_ack_index(doc)
    except DecodeError:
        return
    assert isinstance(ack, int) and INT64_MIN <= ack <= INT64_MAX


# --- well-formed answers decode to what they say -----------------------------------------


@settings(FAST, max_examples=examples(60))
@given(valid_fetch())
def test_valid_fetch_answers_decode_exactly(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, expected = pair
    resp = FetchTaskResponse.from_json(doc)
    assert resp.tasks_version == expected["version"]
    assert len(resp.tasks) == len(expected["tasks"])
    for task, want in zip(resp.tasks, expected["tasks"], strict=True):
        check_task(task)
        assert task.id == want["id"]
        assert task.workflow_payload == want["payload"]
        assert dict(task.secrets) == want["secrets"] and dict(task.vars) == want["vars"]
        assert dict(task.context) == want["context"]
        assert {k: (dict(n.outputs), int(n.result)) for k, n in task.needs.items()} == want[
            "needs"]


@settings(FAST, max_examples=examples(60))
@given(valid_update_task(), valid_update_log(), valid_declare())
def test_valid_report_and_declare_answers_decode_exactly(
    task_pair: tuple[dict[str, Any], dict[str, Any]],
    log_pair: tuple[dict[str, Any], int],
    declare_pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    resp = UpdateTaskResponse.from_json(task_pair[0])
    want = task_pair[1]
    assert (resp.task_id, int(resp.result), resp.sent_outputs) == (
        want["id"], want["result"], want["sent"])
    assert decode_ack_index(log_pair[0]) == log_pair[1]
    runner = decode_runner_response(declare_pair[0], "DeclareResponse")
    assert runner.id == declare_pair[1]["id"] and runner.labels == tuple(
        declare_pair[1]["labels"])
    assert "token=" not in repr(runner)


# --- nonsense is a DecodeError, never anything else ------------------------------------


@settings(FAST, max_examples=examples(150))
@given(json_values)
def test_fetch_decoder_on_arbitrary_json(doc: object) -> None:
    check_fetch(doc)
    check_update_task(doc)
    check_ack(doc)
    try:
        decode_runner_response(doc, "DeclareResponse")
    except DecodeError:
        pass


@settings(FAST, max_examples=examples(150))
@given(mutated(templates(FETCH_TEMPLATES)))
def test_fetch_decoder_on_mutated_answers(doc: object) -> None:
    check_fetch(doc)


@settings(FAST, max_examples=examples(80))
@given(mutated(templates(UPDATE_TASK_TEMPLATES)), mutated(templates(UPDATE_LOG_TEMPLATES)),
       mutated(templates(DECLARE_TEMPLATES)))
def test_report_decoders_on_mutated_answers(task_doc: object, log_doc: object,
                                            declare_doc: object) -> None:
    check_update_task(task_doc)
    check_ack(log_doc)
    try:
        decode_runner_response(declare_doc, "DeclareResponse")
    except DecodeError:
        pass


@settings(FAST, max_examples=examples(200))
@given(timestamps())
def test_timestamps_decode_to_utc_or_fail_cleanly(value: object) -> None:
    try:
        parsed = decode_time(value)
    except DecodeError:
        return
    if parsed is not None:
        offset = parsed.utcoffset()
        assert offset is not None and offset.total_seconds() == 0


@settings(FAST, max_examples=examples(4000))
@given(seeds)
def test_fetch_decoder_on_seeded_nonsense(seed: int) -> None:
    check_fetch(Nasty(seed).document(FETCH_TEMPLATES))


@settings(FAST, max_examples=examples(1500))
@given(seeds)
def test_report_decoders_on_seeded_nonsense(seed: int) -> None:
    nasty = Nasty(seed)
    check_update_task(nasty.document(UPDATE_TASK_TEMPLATES))
    check_ack(nasty.document(UPDATE_LOG_TEMPLATES))
    try:
        decode_runner_response(nasty.document(DECLARE_TEMPLATES), "DeclareResponse")
    except DecodeError:
        pass


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"task": {"id": str(2**63)}}, "int64"),
        ({"task": {"id": 1e300}}, "int64"),
        ({"task": {"id": "1_000"}}, "int64"),
        ({"task": {"id": "١٢٣"}}, "int64"),
        ({"task": {"id": " 7"}}, "int64"),
        ({"tasksVersion": -(2**63) - 1}, "int64"),
        ({"task": {"id": "3", "workflowPayload": "not base64!"}}, "base64"),
        ({"task": {"id": "3", "workflowPayload": "é"}}, "base64"),
        ({"task": {"id": "3", "needs": {"a": {"result": 1.5}}}}, "Result"),
        ({"task": {"id": "3", "secrets": {"A": 1}}}, "string"),
        ({"task": {"id": "3", "context": []}}, "object"),
        ({"additionalTasks": {"id": "3"}}, "array"),
        ({"task": {"id": "0"}}, "positive"),
    ],
)
def test_examples_the_fuzzer_found_or_pins(doc: object, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        FetchTaskResponse.from_json(doc)


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-01-01T00:00:00"]
)
def test_timestamps_out_of_range_are_decode_errors(value: str) -> None:
    with pytest.raises(DecodeError):
        decode_time(value)


# --- the client's reading of an answer (status, content type, bytes) -------------------

CLIENT = RunnerClient("http://127.0.0.1:1", uuid="u", token="t", timeout=5, verify=False)

STATUSES = st.one_of(st.just(200), st.just(200), st.sampled_from(
    [400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504]), st.integers(100, 599))
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/html",
    "", "application/proto", "application/connect+json", "text/plain; charset=utf-8",
    "application/json;;;", "application/jsonx",
])
ERROR_BODIES = st.one_of(
    st.builds(lambda c, m: {"code": c, "message": m},
              st.sampled_from([*sorted(DEFINITE_CODES), "unavailable", "internal", "weird", ""]),
              st.one_of(st.text(max_size=20), json_values)),
    json_values,
)

DECODERS: dict[str, Callable[[Any], Any]] = {
    "FetchTask": FetchTaskResponse.from_json,
    "UpdateTask": UpdateTaskResponse.from_json,
    "UpdateLog": decode_ack_index,
}
DOCUMENTS = {
    "FetchTask": fetch_documents(),
    "UpdateTask": update_task_documents(),
    "UpdateLog": update_log_documents(),
}


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, int, str, bytes]:
    method = draw(st.sampled_from(sorted(DECODERS)))
    status = draw(STATUSES)
    if status == 200:
        body = draw(raw_bodies(DOCUMENTS[method]))
    else:
        body = draw(raw_bodies(ERROR_BODIES))
    return method, status, draw(CONTENT_TYPES), body


def interpret(method: str, status: int, ctype: str, body: bytes) -> object:
    """What ``RunnerClient.call`` + the RPC's decode do with a complete answer."""
    headers = [("content-type", ctype)] if ctype else []
    resp = httpx.Response(status, headers=headers, content=body)
    data = CLIENT._interpret(method, resp, body)
    return CLIENT._decode(DECODERS[method], data)


@settings(FAST, max_examples=examples(100))
@given(answers())
def test_client_reads_any_answer_as_a_value_or_an_rpc_error(
    answer: tuple[str, int, str, bytes],
) -> None:
    method, status, ctype, body = answer
    try:
        value = interpret(method, status, ctype, body)
    except ConnectError as exc:
        assert status != 200
        assert exc.outcome_unknown is (exc.code not in DEFINITE_CODES)
        assert len(str(exc)) <= 700
    except TransportFailure as exc:
        assert isinstance(exc, MalformedAnswer) and exc.outcome_unknown
        assert len(str(exc)) <= 700
    else:
        assert status == 200
        if method == "FetchTask":
            assert isinstance(value, FetchTaskResponse)
            for task in value.tasks:
                check_task(task)


@st.composite
def seeded_answers(draw: st.DrawFn) -> tuple[str, int, str, bytes]:
    nasty = Nasty(draw(seeds))
    method = nasty.r.choice(sorted(DECODERS))
    status = 200 if nasty.r.random() < 0.6 else nasty.r.choice([401, 404, 429, 500, 503, 599])
    bases = SEEDED_BASES[method] if status == 200 else ERROR_TEMPLATES
    body = nasty.body(nasty.document(bases))
    ctype = "application/json" if nasty.r.random() < 0.8 else draw(CONTENT_TYPES)
    return method, status, ctype, body


SEEDED_BASES = {"FetchTask": FETCH_TEMPLATES, "UpdateTask": UPDATE_TASK_TEMPLATES,
                "UpdateLog": UPDATE_LOG_TEMPLATES}
ERROR_TEMPLATES = ({"code": "unavailable", "message": "m"}, {"code": "unauthenticated"},
                   {"code": "internal", "message": "db", "details": []})


@settings(FAST, max_examples=examples(1500))
@given(seeded_answers())
def test_client_reads_seeded_answers_as_a_value_or_an_rpc_error(
    answer: tuple[str, int, str, bytes],
) -> None:
    test_client_reads_any_answer_as_a_value_or_an_rpc_error.hypothesis.inner_test(answer)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"task":' * 50_000,
        b'{"tasksVersion": NaN}',
        b"\xef\xbb\xbf{}",
        '{"tasksVersion":"1"}'.encode("utf-16"),  # json.loads detects UTF-16: accepted
        b'{"task":{"id":"1","workflowPayload":"' + base64.b64encode(b"x" * 10) + b'"}}',
    ],
)
def test_bodies_the_fuzzer_found_or_pins(body: bytes) -> None:
    try:
        interpret("FetchTask", 200, "application/json", body)
    except RpcError:
        pass


def test_an_empty_body_is_not_an_empty_answer() -> None:
    """protojson sends "{}" for an empty message: zero bytes with status 200 came from
    something else, and taking them as "no tasks" would forget a key whose tasks the
    server may have assigned."""
    with pytest.raises(TransportFailure, match="empty answer") as info:
        interpret("FetchTask", 200, "application/json", b"")
    assert info.value.outcome_unknown


def test_deep_nesting_is_malformed_not_a_recursion_error() -> None:
    """Found by the fuzzer: json.loads raises RecursionError (not ValueError) past the
    interpreter's stack; it escaped the client and would have ended the fetch loop."""
    with pytest.raises(TransportFailure, match="invalid JSON"):
        interpret("FetchTask", 200, "application/json", b"[" * 100_000)
    with pytest.raises(ConnectError) as info:
        interpret("FetchTask", 503, "application/json", b'{"code":' * 100_000)
    assert info.value.code == "unavailable"
