"""One payload per job: what Forgejo's jobparser does to a workflow file before its jobs
become tasks.

A task carries a single-job workflow (the executor refuses any other shape), while a
user's workflow file (``sim --workflow``, ``exec``) may have several jobs. Each job
becomes its own payload, keeping the file's top-level keys (``name``, ``on``, ``env``,
``defaults``...). A one-job file is passed on as written, byte for byte.

What the server also does and this does not: run jobs in ``needs`` order and hand their
outputs and results on, expand matrices, evaluate ``runs-on`` expressions. The YAML is
read as YAML 1.2 (the executor's loader), so re-writing a job of a multi-job file does
not turn ``yes`` or ``on`` into booleans.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from scheduler.executor.workflow import load_yaml


class WorkflowFileError(ValueError):
    """The file cannot be read or is not a workflow; the message names the file and why."""


@attrs.frozen
class JobPayload:
    """One job of a workflow file, as the single-job payload a task carries."""

    id: str
    #: ``runs-on`` as literal label names; () when it holds an expression or a group.
    runs_on: tuple[str, ...]
    needs: tuple[str, ...]
    payload: str


def read_workflow(path: Path) -> list[JobPayload]:
    """The jobs of the workflow file at ``path``, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowFileError(f"{path}: cannot read the workflow: {exc}") from None
    try:
        return split_jobs(text)
    except WorkflowFileError as exc:
        raise WorkflowFileError(f"{path}: {exc}") from None


def split_jobs(text: str) -> list[JobPayload]:
    """The jobs of a workflow's text; :class:`WorkflowFileError` if it is not a workflow."""
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise WorkflowFileError(f"not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise WorkflowFileError("not a workflow: expected a YAML mapping with `jobs:`")
    jobs = doc.get("jobs")
    if not isinstance(jobs, Mapping) or not jobs:
        raise WorkflowFileError("not a workflow: `jobs:` is missing or empty")
    out = []
    for job_id, job in jobs.items():
        if not isinstance(job, Mapping):
            raise WorkflowFileError(f"jobs.{job_id} is not a mapping")
        payload = text if len(jobs) == 1 else _one_job(doc, str(job_id), job)
        out.append(JobPayload(str(job_id), _runs_on(job.get("runs-on")),
                              _names(job.get("needs")), payload))
    return out


def _one_job(doc: Mapping[Any, Any], job_id: str, job: Mapping[Any, Any]) -> str:
    single = {key: value for key, value in doc.items() if key != "jobs"}
    single["jobs"] = {job_id: job}
    return yaml.safe_dump(single, sort_keys=False, allow_unicode=True)


def _runs_on(value: object) -> tuple[str, ...]:
    if isinstance(value, Mapping):
        value = value.get("labels")
    names = _names(value)
    return () if any("${{" in name for name in names) else names


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()
