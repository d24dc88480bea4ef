"""Parsing ``Task.workflow_payload``: a single-job workflow, as Forgejo's jobparser writes it.

The payload is YAML (executor.md §1.1, §1.2). Parsing only checks the shape and
turns plain scalars into strings; it evaluates nothing (``${{ }}`` stays as written,
because what an expression sees depends on when it is evaluated). Whether a feature
can be run (``container:``, docker actions...) is the executor's decision. Composite
actions' ``runs.steps`` are parsed by the same :func:`parse_step`.

PyYAML implements YAML 1.1, where ``on``, ``yes`` and ``off`` are booleans, ``0777`` is
octal and ``1:20`` is 80. Workflows are YAML 1.2 (GitHub, and Forgejo's Go parser), so
the payload is read with :class:`Yaml12Loader`: PyYAML's safe loader with the YAML 1.2
core schema's implicit types. ``env: {ANSWER: yes}`` then gives ``yes``, as on GitHub,
and the ``on`` key stays a string. Top-level keys are still not assumed to be strings,
and only the keys used here are read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import attrs
import yaml


class Yaml12Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the implicit scalar types of the YAML 1.2 core schema."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
):
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node)).lower() == "true"


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> Any:
    """Parse ``text`` as YAML 1.2 (core schema) into plain Python values."""
    return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader subclass: safe


class WorkflowError(ValueError):
    """The payload is not a runnable single-job workflow; the message says why."""


@attrs.frozen
class RunDefaults:
    shell: str | None = None
    working_directory: str | None = None


@attrs.frozen
class Step:
    index: int  # 0-based, = StepState.id
    id: str  # ``id:`` or the index as a string, as forgejo-runner numbers id-less steps
    name: str | None = None  # as written; may hold ``${{ }}``
    run: str | None = None
    uses: str | None = None
    shell: str | None = None
    working_directory: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    condition: str | None = None  # ``if:``, as written (None when absent)
    continue_on_error: str | bool = False
    timeout_minutes: str | float | None = None
    with_: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def title(self) -> str:
        """What forgejo-runner calls the step in its log lines (``Step.String``)."""
        return self.name or self.uses or self.run or self.id


@attrs.frozen
class Strategy:
    #: One combination: the server expands the matrix and sends one-element lists.
    matrix: Mapping[str, Any] = attrs.field(factory=dict)
    fail_fast: bool = True
    max_parallel: int = 4


@attrs.frozen
class Job:
    id: str
    name: str
    steps: tuple[Step, ...]
    env: Mapping[str, str] = attrs.field(factory=dict)
    defaults: RunDefaults = RunDefaults()
    condition: str | None = None
    timeout_minutes: str | float | None = None
    container: bool = False
    services: bool = False
    uses: str | None = None  # a reusable-workflow call
    outputs: Mapping[str, str] = attrs.field(factory=dict)
    runs_on: tuple[str, ...] = ()
    strategy: Strategy = Strategy()
    needs: tuple[str, ...] = ()


@attrs.frozen
class Workflow:
    name: str
    env: Mapping[str, str]
    defaults: RunDefaults
    job: Job
    #: ``on.workflow_dispatch.inputs`` / ``on.workflow_call.inputs``: name -> definition.
    dispatch_inputs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    call_inputs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


def parse_workflow(payload: bytes) -> Workflow:
    """The single job of ``payload``; :class:`WorkflowError` if it has another shape."""
    if not payload.strip():
        raise WorkflowError("the task has no workflow payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"the workflow payload is not UTF-8: {exc}") from None
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise WorkflowError(f"the workflow payload is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise WorkflowError("the workflow payload is not a YAML mapping")
    jobs = doc.get("jobs")
    if not isinstance(jobs, Mapping) or not jobs:
        raise WorkflowError("the workflow has no jobs")
    if len(jobs) != 1:
        names = ", ".join(sorted(str(k) for k in jobs))
        raise WorkflowError(f"exactly one job expected, the workflow has {len(jobs)}: {names}")
    ((job_id, job_doc),) = jobs.items()
    name = _optional_str(doc.get("name"), "name") or ""
    # ``on`` is a string key in YAML 1.2; a YAML 1.1 writer may have made it ``true``.
    on = doc.get("on", doc.get(True))
    return Workflow(
        name=name,
        env=_env(doc.get("env"), "env"),
        defaults=_defaults(doc.get("defaults"), "defaults"),
        job=_job(str(job_id), job_doc),
        dispatch_inputs=_trigger_inputs(on, "workflow_dispatch"),
        call_inputs=_trigger_inputs(on, "workflow_call"),
    )


def _trigger_inputs(on: object, event: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(on, Mapping):
        return {}
    trigger = on.get(event)
    if not isinstance(trigger, Mapping):
        return {}
    inputs = trigger.get("inputs")
    if not isinstance(inputs, Mapping):
        return {}
    return {str(k): (v if isinstance(v, Mapping) else {}) for k, v in inputs.items()}


def _job(job_id: str, doc: object) -> Job:
    where = f"jobs.{job_id}"
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    steps_doc = doc.get("steps")
    if steps_doc is None:
        steps_doc = []
    if not isinstance(steps_doc, list):
        raise WorkflowError(f"{where}.steps is not a list")
    # The server drops null steps before numbering them; do the same so ids line up.
    steps = tuple(
        parse_step(i, s, f"{where}.steps[{i}]")
        for i, s in enumerate(s for s in steps_doc if s is not None)
    )
    outputs = doc.get("outputs")
    return Job(
        id=job_id,
        name=_optional_str(doc.get("name"), f"{where}.name") or job_id,
        steps=steps,
        env=_env(doc.get("env"), f"{where}.env"),
        defaults=_defaults(doc.get("defaults"), f"{where}.defaults"),
        condition=_condition(doc, where),
        timeout_minutes=_number(doc.get("timeout-minutes"), f"{where}.timeout-minutes"),
        container=doc.get("container") is not None,
        services=doc.get("services") is not None,
        uses=_optional_str(doc.get("uses"), f"{where}.uses"),
        outputs=_env(outputs, f"{where}.outputs") if outputs is not None else {},
        runs_on=_str_list(doc.get("runs-on"), f"{where}.runs-on"),
        strategy=_strategy(doc.get("strategy"), f"{where}.strategy"),
        needs=_str_list(doc.get("needs"), f"{where}.needs"),
    )


def parse_step(index: int, doc: object, where: str) -> Step:
    """One entry of a job's ``steps:`` (or of a composite action's ``runs.steps``)."""
    if not isinstance(doc, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    run = _optional_str(doc.get("run"), f"{where}.run")
    uses = _optional_str(doc.get("uses"), f"{where}.uses")
    if run is not None and uses is not None:
        raise WorkflowError(f"{where} has both run: and uses:")
    if run is None and uses is None:
        raise WorkflowError(f"{where} has neither run: nor uses:")
    step_id = _optional_str(doc.get("id"), f"{where}.id") or str(index)
    coe = doc.get("continue-on-error", False)
    if not isinstance(coe, bool):
        coe = _scalar(coe, f"{where}.continue-on-error")
    return Step(
        index=index,
        id=step_id,
        name=_optional_str(doc.get("name"), f"{where}.name") or None,
        run=run,
        uses=uses,
        shell=_optional_str(doc.get("shell"), f"{where}.shell"),
        working_directory=_optional_str(
            doc.get("working-directory"), f"{where}.working-directory"
        ),
        env=_env(doc.get("env"), f"{where}.env"),
        condition=_condition(doc, where),
        continue_on_error=coe,
        timeout_minutes=_number(doc.get("timeout-minutes"), f"{where}.timeout-minutes"),
        with_=_env(doc.get("with"), f"{where}.with"),
    )


def _strategy(value: object, where: str) -> Strategy:
    if value is None:
        return Strategy()
    if not isinstance(value, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    matrix: dict[str, Any] = {}
    raw = value.get("matrix")
    if raw is not None and not isinstance(raw, Mapping):
        raise WorkflowError(f"{where}.matrix is not a mapping (the server expands it)")
    for key, values in (raw or {}).items():
        if key in ("include", "exclude"):
            continue
        if isinstance(values, list):
            if len(values) != 1:
                raise WorkflowError(
                    f"{where}.matrix.{key} has {len(values)} values; the server sends one "
                    "combination per task"
                )
            matrix[str(key)] = values[0]
        else:
            matrix[str(key)] = values
    fail_fast = value.get("fail-fast", True)
    max_parallel = value.get("max-parallel", 4)
    return Strategy(
        matrix=matrix,
        fail_fast=fail_fast if isinstance(fail_fast, bool) else str(fail_fast) != "false",
        max_parallel=max_parallel if isinstance(max_parallel, int) else 4,
    )


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(_scalar(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):  # ``runs-on: {group: x, labels: [...]}``
        return _str_list(value.get("labels"), f"{where}.labels")
    return (_scalar(value, where),)


def _condition(doc: Mapping[Any, Any], where: str) -> str | None:
    if "if" not in doc:
        return None
    return _scalar(doc["if"], f"{where}.if")


def _defaults(value: object, where: str) -> RunDefaults:
    if value is None:
        return RunDefaults()
    if not isinstance(value, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    run = value.get("run")
    if run is None:
        return RunDefaults()
    if not isinstance(run, Mapping):
        raise WorkflowError(f"{where}.run is not a mapping")
    return RunDefaults(
        shell=_optional_str(run.get("shell"), f"{where}.run.shell"),
        working_directory=_optional_str(
            run.get("working-directory"), f"{where}.run.working-directory"
        ),
    )


def _env(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str) and "${{" in value:
        raise WorkflowError(
            f"{where} is a single expression (${{{{ }}}}); this executor needs a mapping here"
        )
    if not isinstance(value, Mapping):
        raise WorkflowError(f"{where} is not a mapping")
    return {str(k): _scalar(v, f"{where}.{k}") for k, v in value.items()}


def _number(value: object, where: str) -> str | float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise WorkflowError(f"{where} must be a number")
    if isinstance(value, int | float):
        return float(value)
    return _scalar(value, where)


def _optional_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    return _scalar(value, where)


def _scalar(value: object, where: str) -> str:
    """A YAML scalar as the string a workflow means by it (``true``, ``3``, ``1.5``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise WorkflowError(f"{where} must be a plain value, not a {type(value).__name__}")
