"""runner.v1 messages and their proto3 JSON mapping.

Forgejo speaks Connect with connect-go's JSON codec (``protojson``), so every rule
here follows the proto3 JSON mapping (shared/reference/protocol.md §1.3):

* int64 fields go out as JSON strings and come in as strings *or* numbers;
* zero values are omitted on output and missing keys mean the zero value on input;
* unknown keys are ignored (Forgejo keeps adding fields);
* enums go out by name and come in by name or number;
* ``bytes`` are base64; timestamps are RFC 3339 in UTC.

Decoding is lenient about shape only where proto3 itself is; anything else
(a list where an object belongs, a non-numeric id) raises :class:`DecodeError`,
which the client treats like any malformed answer.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from scheduler.errors import DecodeError

JSON = dict[str, Any]


class Result(enum.IntEnum):
    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    CANCELLED = 3
    SKIPPED = 4

    @property
    def wire_name(self) -> str:
        return f"RESULT_{self.name}"

    @property
    def is_final(self) -> bool:
        return self is not Result.UNSPECIFIED

    @classmethod
    def decode(cls, value: object, where: str) -> Result:
        if value is None:
            return cls.UNSPECIFIED
        if isinstance(value, str):
            name = value.removeprefix("RESULT_")
            try:
                return cls[name]
            except KeyError:
                raise DecodeError(f"{where}: unknown Result {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                # proto3 open enums keep unknown numbers; we have no name for it.
                return cls.UNSPECIFIED
        raise DecodeError(f"{where}: expected a Result enum, got {type(value).__name__}")


# --- scalar helpers -------------------------------------------------------------


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# protojson's int64 strings: plain ASCII decimal. Python's int() would also take
# "1_000", " 7 " and non-ASCII digits, none of which a proto3 peer sends.
_INT64_TEXT = re.compile(r"-?[0-9]{1,19}")


def _int64(value: object, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise DecodeError(f"{where}: expected int64, got bool")
    if isinstance(value, str):
        if not _INT64_TEXT.fullmatch(value):
            raise DecodeError(f"{where}: expected int64, got {value[:40]!r}")
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise DecodeError(f"{where}: {str(value)[:40]}... is out of the int64 range")
        return value
    raise DecodeError(f"{where}: expected int64, got {type(value).__name__}")


def _str(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise DecodeError(f"{where}: expected string, got {type(value).__name__}")


def _bool(value: object, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise DecodeError(f"{where}: expected bool, got {type(value).__name__}")


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise DecodeError(f"{where}: expected object, got {type(value).__name__}")


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise DecodeError(f"{where}: expected array, got {type(value).__name__}")


def _key(key: object) -> str:
    """A map key as part of an error's path: keys come from the server, and a 70 kB key
    must not become a 70 kB log line."""
    text = str(key)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _str_map(value: object, where: str) -> dict[str, str]:
    return {str(k): _str(v, f"{where}.{_key(k)}") for k, v in _obj(value, where).items()}


def _str_list(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _bytes(value: object, where: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise DecodeError(f"{where}: expected base64 string, got {type(value).__name__}")
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{where}: invalid base64") from None


def encode_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as protojson writes it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def decode_time(value: object, where: str = "time") -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{where}: expected RFC 3339 timestamp, got {type(value).__name__}")
    text = value
    # Python 3.11 parses "Z" but not more than 6 fractional digits everywhere; trim to µs.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(f"{where}: invalid timestamp {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise DecodeError(f"{where}: timestamp without a time zone")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise DecodeError(f"{where}: timestamp out of range {value[:40]!r}") from None


def _put(out: JSON, key: str, value: object) -> None:
    """Add ``key`` unless ``value`` is a proto3 zero value."""
    if value is None or value == "" or value == 0 or value == () or value == {} or value is False:
        return
    if isinstance(value, bool):
        out[key] = value
    elif isinstance(value, int):
        out[key] = str(value)
    else:
        out[key] = value


# --- messages --------------------------------------------------------------------


@attrs.frozen
class Runner:
    id: int = 0
    uuid: str = ""
    token: str = attrs.field(default="", repr=False)
    name: str = ""
    version: str = ""
    labels: tuple[str, ...] = ()
    ephemeral: bool = False

    @classmethod
    def from_json(cls, data: object, where: str = "runner") -> Runner:
        d = _obj(data, where)
        return cls(
            id=_int64(d.get("id"), f"{where}.id"),
            uuid=_str(d.get("uuid"), f"{where}.uuid"),
            token=_str(d.get("token"), f"{where}.token"),
            name=_str(d.get("name"), f"{where}.name"),
            version=_str(d.get("version"), f"{where}.version"),
            labels=_str_list(d.get("labels"), f"{where}.labels"),
            ephemeral=_bool(d.get("ephemeral"), f"{where}.ephemeral"),
        )


@attrs.frozen
class TaskNeed:
    outputs: Mapping[str, str] = attrs.field(factory=dict)
    result: Result = Result.UNSPECIFIED

    @classmethod
    def from_json(cls, data: object, where: str) -> TaskNeed:
        d = _obj(data, where)
        return cls(
            outputs=_str_map(d.get("outputs"), f"{where}.outputs"),
            result=Result.decode(d.get("result"), f"{where}.result"),
        )


@attrs.frozen
class Task:
    """One job attempt handed to this runner. ``secrets`` never reach a repr."""

    id: int
    workflow_payload: bytes = attrs.field(default=b"", repr=False)
    context: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    secrets: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    needs: Mapping[str, TaskNeed] = attrs.field(factory=dict, repr=False)
    vars: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: object, where: str = "task") -> Task:
        d = _obj(data, where)
        task_id = _int64(d.get("id"), f"{where}.id")
        if task_id <= 0:
            raise DecodeError(f"{where}.id: expected a positive task id")
        needs = {
            str(k): TaskNeed.from_json(v, f"{where}.needs.{_key(k)}")
            for k, v in _obj(d.get("needs"), f"{where}.needs").items()
        }
        return cls(
            id=task_id,
            workflow_payload=_bytes(d.get("workflowPayload", d.get("workflow_payload")),
                                    f"{where}.workflowPayload"),
            context=dict(_obj(d.get("context"), f"{where}.context")),
            secrets=_str_map(d.get("secrets"), f"{where}.secrets"),
            needs=needs,
            vars=_str_map(d.get("vars"), f"{where}.vars"),
        )


@attrs.frozen
class FetchTaskResponse:
    tasks: tuple[Task, ...] = ()
    tasks_version: int = 0

    @classmethod
    def from_json(cls, data: object) -> FetchTaskResponse:
        d = _obj(data, "FetchTaskResponse")
        tasks: list[Task] = []
        if d.get("task") is not None:
            tasks.append(Task.from_json(d["task"], "task"))
        extra = d.get("additionalTasks", d.get("additional_tasks"))
        # Forgejo 14.0.0/14.0.1 could send additional tasks without a first one; take them all.
        for i, item in enumerate(_list(extra, "additionalTasks")):
            tasks.append(Task.from_json(item, f"additionalTasks[{i}]"))
        version = _int64(d.get("tasksVersion", d.get("tasks_version")), "tasksVersion")
        return cls(tasks=tuple(tasks), tasks_version=version)


def fetch_task_request(tasks_version: int, task_capacity: int) -> JSON:
    out: JSON = {}
    _put(out, "tasksVersion", tasks_version)
    # task_capacity is `optional`: it has presence, so it is always sent.
    out["taskCapacity"] = str(task_capacity)
    return out


def _state_json(
    ident: int, result: Result, started: dt.datetime | None, stopped: dt.datetime | None
) -> JSON:
    """The fields TaskState and StepState share, zero values left out."""
    out: JSON = {}
    _put(out, "id", ident)
    if result is not Result.UNSPECIFIED:
        out["result"] = result.wire_name
    if started is not None:
        out["startedAt"] = encode_time(started)
    if stopped is not None:
        out["stoppedAt"] = encode_time(stopped)
    return out


@attrs.frozen
class StepState:
    id: int
    result: Result = Result.UNSPECIFIED
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    log_index: int = 0
    log_length: int = 0

    def to_json(self) -> JSON:
        out = _state_json(self.id, self.result, self.started_at, self.stopped_at)
        _put(out, "logIndex", self.log_index)
        _put(out, "logLength", self.log_length)
        return out


@attrs.frozen
class TaskState:
    id: int
    result: Result = Result.UNSPECIFIED
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    steps: tuple[StepState, ...] = ()

    def to_json(self) -> JSON:
        out = _state_json(self.id, self.result, self.started_at, self.stopped_at)
        if self.steps:
            out["steps"] = [s.to_json() for s in self.steps]
        return out


def update_task_request(state: TaskState, outputs: Mapping[str, str]) -> JSON:
    out: JSON = {"state": state.to_json()}
    if outputs:
        out["outputs"] = dict(outputs)
    return out


@attrs.frozen
class UpdateTaskResponse:
    """The server's view of the task: UNSPECIFIED while running, else its final result."""

    task_id: int = 0
    result: Result = Result.UNSPECIFIED
    sent_outputs: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> UpdateTaskResponse:
        d = _obj(data, "UpdateTaskResponse")
        state = _obj(d.get("state"), "state")
        return cls(
            task_id=_int64(state.get("id"), "state.id"),
            result=Result.decode(state.get("result"), "state.result"),
            sent_outputs=_str_list(d.get("sentOutputs", d.get("sent_outputs")), "sentOutputs"),
        )


@attrs.frozen
class LogRow:
    time: dt.datetime
    content: str

    def to_json(self) -> JSON:
        out: JSON = {"time": encode_time(self.time)}
        _put(out, "content", self.content)
        return out


def update_log_request(task_id: int, index: int, rows: tuple[LogRow, ...], no_more: bool) -> JSON:
    out: JSON = {}
    _put(out, "taskId", task_id)
    _put(out, "index", index)
    if rows:
        out["rows"] = [r.to_json() for r in rows]
    _put(out, "noMore", no_more)
    return out


def decode_ack_index(data: object) -> int:
    d = _obj(data, "UpdateLogResponse")
    return _int64(d.get("ackIndex", d.get("ack_index")), "ackIndex")


def declare_request(version: str, labels: tuple[str, ...]) -> JSON:
    out: JSON = {}
    _put(out, "version", version)
    if labels:
        out["labels"] = list(labels)
    return out


def register_request(name: str, token: str, version: str, labels: tuple[str, ...]) -> JSON:
    out: JSON = {}
    _put(out, "name", name)
    _put(out, "token", token)
    _put(out, "version", version)
    if labels:
        # forgejo-runner fills the deprecated agent_labels too, for old servers.
        out["agentLabels"] = list(labels)
        out["labels"] = list(labels)
    return out


def decode_runner_response(data: object, what: str) -> Runner:
    d = _obj(data, what)
    return Runner.from_json(d.get("runner"), f"{what}.runner")

