"""Hypothesis strategies for runner.v1 answers, shared by the fuzz tests (no tests here).

Three kinds of documents:

* ``json_values``: arbitrary JSON with nasty leaves (int64 edges and numbers far past
  them, floats, numeric-looking text, timestamps, base64-ish text, lone surrogates,
  field names of the real messages as keys), nested up to a few levels;
* ``valid_*``: well-formed answers in every spelling proto3 JSON allows (int64 as string
  or number, enums by name or number, camelCase or snake_case, base64 with or without
  padding, URL-safe or not, unknown extra fields), with what they must decode to;
* ``mutated(...)``: a valid answer with one to three edits anywhere in its tree
  (replace a value by nonsense, delete or add a key, wrap a value in a list, turn a
  value into a string), so the decoders are driven deep into every field.

Plus ``raw_bodies``: the bytes of an HTTP body built from those (invalid UTF-8,
UTF-16, a BOM, truncation, nesting deeper than the interpreter's stack...).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from hypothesis import strategies as st

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

FIELD_NAMES = (
    "id", "task", "additionalTasks", "additional_tasks", "tasksVersion", "tasks_version",
    "workflowPayload", "workflow_payload", "context", "secrets", "needs", "vars", "outputs",
    "result", "state", "sentOutputs", "sent_outputs", "ackIndex", "ack_index", "runner",
    "uuid", "token", "name", "version", "labels", "ephemeral", "code", "message",
)  # fmt: skip

RESULT_NAMES = ("RESULT_UNSPECIFIED", "RESULT_SUCCESS", "RESULT_FAILURE", "RESULT_CANCELLED",
                "RESULT_SKIPPED")

_NUMERIC_TEXT = ("١٢٣", "1e3", "0x10", "NaN", "Infinity", "-0", " 1", "1 ", "1_0", "", "+5",
                 "1.0", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
                 "00000000000000000000001", "0", "-1", "18446744073709551615")
_TIMESTAMPS = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-02-30T00:00:00Z",
               "2024-01-01T00:00:00.1234567890123Z", "2024-01-01T00:00:00.Z", "2024-01-01",
               "2024-01-01T24:00:00Z", "2024-01-01T00:00:00+99:00", "2024-06-01T12:00:00Z",
               "2024-06-01T12:00:00", "2024-06-01T12:00:00.5+05:30", "-2024-01-01T00:00:00Z")
_ODD_TEXT = ("\ud800", "a\udcffb", "\x00", "\u202e", "${{ secrets.X }}", "::add-mask::", "é",
             "=", "A===", "AB=C", "QUJD\n", "-_-_", "RESULT_SUCCESS", "RESULT_", "SUCCESS",
             "__class__", "_member_map_", "true", "null", "{}", "[]", "\\u0000")


keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))

big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=INT64_MAX - 2, max_value=INT64_MAX + 2),
    st.integers(min_value=INT64_MIN - 2, max_value=INT64_MIN + 2),
    st.integers(min_value=10**18, max_value=10**300),
    st.integers(min_value=-(10**300), max_value=-(10**18)),
)
numeric_text = st.one_of(
    big_ints.map(str),
    st.sampled_from(_NUMERIC_TEXT),
)
timestamp_text = st.one_of(
    st.builds(
        lambda d, zone: d.isoformat() + zone,
        st.datetimes(),
        st.sampled_from(["Z", "z", "", "+00:00", "-23:59", "+24:00", "+05:30", "+1", " UTC"]),
    ),
    st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-02-30T00:00:00Z",
        "2024-01-01T00:00:00.1234567890123Z", "2024-01-01T00:00:00.Z", "2024-01-01T24:00:00Z",
        "2024-01-01", "T00:00:00Z", "2024-01-01T00:00:00+99:00", "2024-01-01T00:00:00.5.5Z",
        "2024-13-01T00:00:00Z", "-2024-01-01T00:00:00Z", "2024-01-01T00:00:00.+01:00",
    ]),
)
base64_text = st.one_of(
    st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=_-", max_size=24),
    st.sampled_from(["=", "A===", "A", "AB=C", "é", "QUJD\n", "QUJD\n==", "-_-_"]),
)
odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udcffb", "\x00", "\u202e", "${{ secrets.X }}", "::add-mask::"]),
)
# Big strings are made by repetition: cheap to build, still megabytes on the wire.
huge_text = st.integers(min_value=100_000, max_value=2_000_000).map(lambda n: "A" * n)

leaf = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(),
    numeric_text,
    timestamp_text,
    base64_text,
    odd_text,
)
json_values = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=10,
)
_MAP_KEYS = st.sampled_from(["A", "TOKEN", "GITHUB_TOKEN", "x y", "", "é", "K" * 40])
str_maps = st.dictionaries(_MAP_KEYS, st.text(max_size=12), max_size=3)
contexts = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(["event", "job", "token", "repository", "run_id", "x"]),
                    json_values, max_size=2),
)


def int64_wire(value: int) -> st.SearchStrategy[Any]:
    """An int64 as protojson writes it (a string) or as peers may send it (a number)."""
    choices: list[Any] = [str(value), value]
    if abs(value) < 2**53:
        choices.append(float(value))
    return st.sampled_from(choices)


def result_wire(index: int) -> st.SearchStrategy[Any]:
    name = RESULT_NAMES[index]
    return st.sampled_from([name, name.removeprefix("RESULT_"), index])


def encode_bytes(data: bytes, style: str) -> str:
    if style == "std":
        return base64.b64encode(data).decode()
    if style == "std-nopad":
        return base64.b64encode(data).decode().rstrip("=")
    if style == "url":
        return base64.urlsafe_b64encode(data).decode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def valid_task(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(wire document, expected decoded fields) of one Task."""
    task_id = draw(st.integers(min_value=1, max_value=INT64_MAX))
    payload = draw(st.binary(max_size=120))
    secrets = draw(str_maps)
    variables = draw(str_maps)
    context = draw(contexts)
    needs_in = draw(st.dictionaries(
        st.sampled_from(["build", "test"]), st.tuples(str_maps, st.integers(0, 4)), max_size=2))
    snake = draw(st.booleans())
    doc: dict[str, Any] = {"id": draw(int64_wire(task_id))}
    if payload or draw(st.booleans()):
        key = "workflow_payload" if snake else "workflowPayload"
        doc[key] = encode_bytes(payload, draw(st.sampled_from(["std", "std-nopad", "url", "u"])))
    if context or draw(st.booleans()):
        doc["context"] = context
    if bool(secrets) or draw(st.booleans()):
        doc["secrets"] = secrets
    if variables:
        doc["vars"] = variables
    if needs_in:
        doc["needs"] = {
            k: {"outputs": outs, "result": draw(result_wire(r))}
            for k, (outs, r) in needs_in.items()
        }
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["newField", "matrix", "tasks_version"]))] = draw(json_values)
    expected = {
        "id": task_id, "payload": payload, "secrets": secrets, "vars": variables,
        "context": context, "needs": {k: (outs, r) for k, (outs, r) in needs_in.items()},
    }
    return doc, expected


@st.composite
def valid_fetch(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FetchTaskResponse document, {"tasks": [expected...], "version": int})."""
    first = draw(st.none() | valid_task())
    more = draw(st.lists(valid_task(), max_size=2))
    version = draw(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
    snake = draw(st.booleans())
    doc: dict[str, Any] = {}
    if first is not None:
        doc["task"] = first[0]
    if more:
        doc["additional_tasks" if snake else "additionalTasks"] = [t for t, _ in more]
    if version or draw(st.booleans()):
        doc["tasks_version" if snake else "tasksVersion"] = draw(int64_wire(version))
    tasks = ([first[1]] if first is not None else []) + [e for _, e in more]
    return doc, {"tasks": tasks, "version": version}


@st.composite
def valid_update_task(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    task_id = draw(st.integers(min_value=0, max_value=INT64_MAX))
    result = draw(st.integers(0, 4))
    sent = draw(st.lists(st.text(max_size=10), max_size=4))
    doc: dict[str, Any] = {"state": {"id": draw(int64_wire(task_id)),
                                     "result": draw(result_wire(result))}}
    if bool(sent) or draw(st.booleans()):
        doc["sent_outputs" if draw(st.booleans()) else "sentOutputs"] = sent
    if draw(st.booleans()):
        doc["state"]["steps"] = draw(json_values)  # not part of the answer: ignored
    return doc, {"id": task_id, "result": result, "sent": tuple(sent)}


@st.composite
def valid_update_log(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    ack = draw(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
    key = draw(st.sampled_from(["ackIndex", "ack_index"]))
    return {key: draw(int64_wire(ack))}, ack


@st.composite
def valid_declare(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    runner = {
        "id": draw(st.integers(0, INT64_MAX)),
        "uuid": draw(st.text(max_size=36)),
        "token": draw(st.text(max_size=40)),
        "name": draw(st.text(max_size=20)),
        "version": draw(st.text(max_size=10)),
        "labels": draw(st.lists(st.text(max_size=10), max_size=4)),
        "ephemeral": draw(st.booleans()),
    }
    doc = {k: (str(v) if k == "id" else v) for k, v in runner.items()}
    return {"runner": doc}, runner


def _containers(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        out.append(path)
        for k, v in doc.items():
            out += _containers(v, (*path, k))
    elif isinstance(doc, list):
        out.append(path)
        for i, v in enumerate(doc):
            out += _containers(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[tuple[Any, Any]]) -> Any:
    """A valid document of ``base`` with one to three edits anywhere in its tree."""
    doc = copy.deepcopy(draw(base)[0])
    for _ in range(draw(st.integers(1, 3))):
        containers = _containers(doc)
        if not containers:
            break
        path = draw(st.sampled_from(containers))
        node = _get(doc, path)
        slots = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap", "stringify", "top"]))
        if op == "top":
            doc = draw(json_values)
            continue
        if op == "add" or not slots:
            if isinstance(node, dict):
                node[draw(keys)] = draw(json_values)
            else:
                node.append(draw(json_values))
            continue
        slot = draw(st.sampled_from(slots))
        if op == "delete":
            del node[slot]
        elif op == "replace":
            node[slot] = draw(json_values)
        elif op == "wrap":
            node[slot] = [node[slot]]
        else:
            node[slot] = json.dumps(node[slot])
    return doc


# Well-formed answers covering every field, as bases for mutation: generating a random
# valid answer first costs ten times more than the edits, which carry the nonsense.
_PAYLOAD = base64.b64encode(b"jobs:\n  j:\n    steps:\n      - run: sleep 1\n").decode()
_TASK = {
    "id": "42",
    "workflowPayload": _PAYLOAD,
    "context": {"token": "ctx-token", "event": {"ref": "main", "n": [1, 2.5, None]},
                "job": "j", "run_id": "7"},
    "secrets": {"GITHUB_TOKEN": "task-token", "DEPLOY": "hunter2"},
    "needs": {"build": {"outputs": {"sha": "abc"}, "result": "RESULT_SUCCESS"}},
    "vars": {"V": "1"},
}
FETCH_TEMPLATES: tuple[Any, ...] = (
    {"task": _TASK, "tasksVersion": "12"},
    {"task": _TASK, "additionalTasks": [dict(_TASK, id=43), dict(_TASK, id="44")],
     "tasksVersion": 3},
    {"additional_tasks": [dict(_TASK, workflowPayload=_PAYLOAD.rstrip("="))],
     "tasks_version": "9"},
    {"tasksVersion": "5"},
    {},
)
UPDATE_TASK_TEMPLATES: tuple[Any, ...] = (
    {"state": {"id": "42", "result": "RESULT_CANCELLED"}, "sentOutputs": ["a", "b"]},
    {"state": {"id": 42, "result": 1}, "sent_outputs": []},
    {"state": {"id": "42"}},
)
UPDATE_LOG_TEMPLATES: tuple[Any, ...] = ({"ackIndex": "17"}, {"ack_index": 3}, {})
DECLARE_TEMPLATES: tuple[Any, ...] = (
    {"runner": {"id": "1", "uuid": "u", "name": "n", "version": "v", "labels": ["a", "b"],
                "ephemeral": False}},
)


def templates(docs: tuple[Any, ...]) -> st.SearchStrategy[tuple[Any, None]]:
    return st.sampled_from(docs).map(lambda d: (d, None))


def fetch_documents() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(FETCH_TEMPLATES), mutated(templates(FETCH_TEMPLATES)), json_values)


def update_task_documents() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(UPDATE_TASK_TEMPLATES),
                     mutated(templates(UPDATE_TASK_TEMPLATES)), json_values)


def update_log_documents() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(UPDATE_LOG_TEMPLATES),
                     mutated(templates(UPDATE_LOG_TEMPLATES)), json_values)


def _json_bytes(doc: Any) -> bytes:
    # Lone surrogates survive as \\ud800 escapes (ensure_ascii), as a peer could send them.
    return json.dumps(doc).encode()


@st.composite
def raw_bodies(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """HTTP body bytes: mostly JSON of ``documents``, sometimes broken on purpose."""
    body = _json_bytes(draw(documents))
    kind = draw(st.sampled_from(
        ["plain"] * 6 + ["utf16", "bom", "bad-utf8", "truncate", "deep", "nan", "binary",
                         "huge", "non-object"]))
    if kind == "utf16":
        return body.decode().encode("utf-16")
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "bad-utf8":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
    if kind == "truncate":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))]
    if kind == "deep":
        depth = draw(st.integers(500, 200_000))
        opener = draw(st.sampled_from([b"[", b'{"task":', b'{"a":[']))
        return opener * depth
    if kind == "nan":
        return b'{"tasksVersion": NaN, "task": {"id": Infinity}}'
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "huge":
        secret = draw(huge_text)
        return _json_bytes({"task": {"id": "7", "secrets": {"BIG": secret}, "context": {
            "x": secret}}, "tasksVersion": "3"})
    if kind == "non-object":
        return _json_bytes(draw(st.one_of(st.lists(json_values, max_size=3), big_ints,
                                          st.text(max_size=10), st.none(), st.booleans())))
    return body


def timestamps() -> st.SearchStrategy[Any]:
    return st.one_of(timestamp_text, json_values)


# --- the fast generator -----------------------------------------------------------------
#
# Hypothesis spends about a millisecond per example on its own bookkeeping and a
# fraction of one per draw, so documents built draw by draw cost 5-20 ms each. For the
# bulk of the cases, hypothesis draws one integer seed per example and ``Nasty`` builds
# the document from it with ``random.Random``: the same palettes, a twentieth of the
# cost, reproducible from the seed hypothesis prints on failure (no shrinking, which is
# what the draw-by-draw strategies above are for).

seeds = st.integers(min_value=0, max_value=2**64 - 1)

class Nasty:
    """JSON-ish nonsense and edits of real answers, from one ``random.Random``."""

    def __init__(self, seed: int) -> None:
        import random

        self.r = random.Random(seed)

    def leaf(self) -> Any:
        r = self.r
        kind = r.randrange(13)
        if kind == 0:
            return r.choice([None, True, False])
        if kind == 1:
            return r.randint(-1000, 1000)
        if kind == 2:
            return r.choice([INT64_MAX, INT64_MIN]) + r.randint(-2, 2)
        if kind == 3:
            return r.choice([1, -1]) * 10 ** r.randint(18, 300) + r.randint(0, 9)
        if kind == 4:
            return r.choice([float("nan"), float("inf"), -float("inf"), -0.0, 1e308, 5e-324,
                             2.0**63, 1.5, r.uniform(-1e20, 1e20)])
        if kind == 5:
            return r.choice(_NUMERIC_TEXT) if r.random() < 0.5 else str(self.leaf_int())
        if kind == 6:
            return r.choice(_TIMESTAMPS)
        if kind == 7:
            data = r.randbytes(r.randint(0, 40))
            text = base64.b64encode(data) if r.random() < 0.5 else base64.urlsafe_b64encode(data)
            text = text.rstrip(b"=") if r.random() < 0.5 else text
            return text.decode()
        if kind == 8:
            return r.choice(_ODD_TEXT)
        if kind == 9:
            return r.choice(FIELD_NAMES)
        if kind == 10:
            return "".join(chr(r.randint(0, 0x2FFF)) for _ in range(r.randint(0, 12)))
        if kind == 11:
            return "A" * r.choice([1000, 70_000, 1_000_000]) if r.random() < 0.1 else "a"
        return r.choice(RESULT_NAMES)

    def leaf_int(self) -> int:
        r = self.r
        choices: list[int] = [r.randint(-5, 5), INT64_MAX + r.randint(-1, 1),
                              INT64_MIN + r.randint(-1, 1), 10 ** r.randint(19, 40)]
        return r.choice(choices)

    def key(self) -> str:
        return self.r.choice(FIELD_NAMES) if self.r.random() < 0.7 else str(self.leaf())[:10]

    def value(self, depth: int = 3) -> Any:
        r = self.r
        if depth > 0 and r.random() < 0.35:
            if r.random() < 0.5:
                return [self.value(depth - 1) for _ in range(r.randint(0, 4))]
            return {self.key(): self.value(depth - 1) for _ in range(r.randint(0, 4))}
        return self.leaf()

    def mutate(self, doc: Any, edits: int) -> Any:
        r = self.r
        doc = copy.deepcopy(doc)
        for _ in range(edits):
            containers = _containers(doc)
            if not containers or r.random() < 0.03:
                doc = self.value()
                continue
            node = _get(doc, r.choice(containers))
            slots = list(node) if isinstance(node, dict) else list(range(len(node)))
            op = r.choice(["replace", "replace", "delete", "add", "wrap", "stringify"])
            if op == "add" or not slots:
                if isinstance(node, dict):
                    node[self.key()] = self.value()
                else:
                    node.append(self.value())
                continue
            slot = r.choice(slots)
            if op == "delete":
                del node[slot]
            elif op == "replace":
                node[slot] = self.value()
            elif op == "wrap":
                node[slot] = [node[slot]] if r.random() < 0.5 else {"value": node[slot]}
            else:
                node[slot] = json.dumps(node[slot])
        return doc

    def document(self, bases: tuple[Any, ...]) -> Any:
        """Mostly an edited real answer; sometimes pure nonsense."""
        if self.r.random() < 0.15:
            return self.value()
        return self.mutate(self.r.choice(bases), self.r.randint(0, 3))

    def body(self, doc: Any) -> bytes:
        """The HTTP body of ``doc``, sometimes broken on purpose."""
        r = self.r
        data = json.dumps(doc).encode()
        kind = r.randrange(16)
        if kind == 0:
            return data.decode().encode("utf-16")
        if kind == 1:
            return b"\xef\xbb\xbf" + data
        if kind == 2:
            at = r.randint(0, len(data))
            return data[:at] + r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]) + data[at:]
        if kind == 3:
            return data[: r.randint(0, max(0, len(data) - 1))]
        if kind == 4:
            return r.choice([b"[", b'{"task":', b'{"a":[']) * r.randint(500, 100_000)
        if kind == 5:
            return r.randbytes(r.randint(0, 64))
        return data
