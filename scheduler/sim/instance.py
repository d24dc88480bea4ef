"""One simulated Forgejo: runners, a job queue, tasks, logs — protocol.md §4, §5, §8, §10.

The RPC methods take the decoded JSON body (a dict) and return the JSON answer (a dict),
raising ``ConnectError`` for Connect errors; HTTP, faults and delivery bookkeeping live in
``server.py``. Everything here is synchronous and runs on the trio thread, so one RPC is
one atomic "transaction", as Forgejo's DB transactions are per task.

Forgejo 15 is the default; ``forgejo14=True`` ignores ``x-runner-request-key`` entirely
(a retried FetchTask assigns new tasks, and a task lost in a dropped answer stays lost
until the zombie reaper fails it) and has no FetchSingleTask.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import trio
import yaml

from scheduler.sim.faults import FaultInjector, FaultPlan
from scheduler.sim.ledger import FinishedBy, Ledger
from scheduler.sim.records import LogRow, SimJob, SimTask, StepState, StoredStep, UpdateRecord
from scheduler.sim.wire import (
    JSON,
    ConnectError,
    Result,
    b64,
    field,
    has_field,
    int64,
    parse_bool,
    parse_int64,
    parse_list,
    parse_object,
    parse_result,
    parse_string,
    parse_string_list,
    parse_string_map,
    parse_timestamp,
    put,
    put_int64,
    put_result,
)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_OUTPUT_KEY = 255
MAX_OUTPUT_VALUE = 1024 * 1024
DEFAULT_ACTIONS_URL = "https://code.forgejo.org"


def _name(_: object, __: object, value: str) -> None:
    if not NAME_RE.match(value):
        raise ValueError(f"instance name must match {NAME_RE.pattern}: {value!r}")


def _pair(value: tuple[float, float] | list[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"duration range must be 0 <= low <= high, got {value}")
    return low, high


@attrs.frozen
class InstanceSpec:
    """How to build one simulated Forgejo."""

    name: str = attrs.field(validator=_name)
    forgejo14: bool = False
    #: Labels of the pre-provisioned runner (as after a registration; Declare replaces them).
    labels: tuple[str, ...] = ("sim",)
    faults: FaultPlan = attrs.field(factory=FaultPlan)
    #: Poisson arrival rate in jobs per second (0 = no automatic arrivals).
    rate: float = 0.0
    duration_range: tuple[float, float] = attrs.field(default=(0.5, 3.0), converter=_pair)
    max_jobs: int | None = None
    #: ``runs-on`` of the generated jobs.
    runs_on: tuple[str, ...] = ("sim",)
    #: Seconds without UpdateTask/UpdateLog after which a running task is failed (None = never).
    zombie_timeout: float | None = 600.0


@attrs.define
class SimRunner:
    id: int
    uuid: str
    token: str
    name: str
    labels: list[str]
    version: str = ""

    @property
    def label_names(self) -> set[str]:
        """Label names: the part before the first ``:`` (``sim:host`` → ``sim``)."""
        return {label.split(":", 1)[0] for label in self.labels if label}

    def message(self, *, with_token: bool) -> JSON:
        out: JSON = {}
        put_int64(out, "id", self.id)
        put(out, "uuid", self.uuid)
        if with_token:
            put(out, "token", self.token)
        put(out, "name", self.name)
        put(out, "version", self.version)
        put(out, "labels", list(self.labels))
        return out


def _duration_text(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def default_workflow(instance: str, task_id: int, runs_on: tuple[str, ...], duration: float) -> str:
    """A single-job workflow whose steps are plain ``run:`` bash commands."""
    return (
        f"name: sim-{instance}\n"
        "on: [push]\n"
        "jobs:\n"
        "  job:\n"
        f"    name: task {task_id}\n"
        f"    runs-on: {json.dumps(list(runs_on))}\n"
        "    steps:\n"
        "      - name: hello\n"
        f'        run: echo "task {task_id} on {instance}"\n'
        "      - name: work\n"
        f"        run: sleep {_duration_text(duration)}\n"
    )


def _count_steps(payload: bytes) -> int | None:
    """Steps of the single job of a workflow, or None if it cannot be read."""
    try:
        doc = yaml.safe_load(payload)
        jobs = doc["jobs"]
        (job,) = jobs.values()
        steps = job.get("steps") or []
        return len(steps) if isinstance(steps, list) else None
    except Exception:  # a test may hand in anything; the runner will judge it
        return None


def _new_token() -> str:
    return secrets.token_hex(20)


def _now() -> float:
    """trio's clock, or 0 outside a trio run (a test may queue jobs before serving)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SimInstance:
    """A Forgejo with one pre-provisioned runner (more can Register), a job queue and tasks."""

    def __init__(
        self,
        spec: InstanceSpec,
        ledger: Ledger,
        injector: FaultInjector,
        job_ids: Iterator[int],
        *,
        registration_token: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.forgejo14 = spec.forgejo14
        self.ledger = ledger
        self.faults = injector
        self.zombie_timeout = spec.zombie_timeout
        self.base_url = f"http://127.0.0.1/{spec.name}"  # replaced once the server is bound
        self.registration_token = registration_token or _new_token()
        self.tasks_version = 0
        self.jobs: dict[int, SimJob] = {}
        self.tasks: dict[int, SimTask] = {}
        self.runners: dict[str, SimRunner] = {}
        self._job_ids = job_ids
        self._runner_ids = iter(range(1, 2**62))
        self._waiting: dict[int, SimJob] = {}
        self._running: dict[int, SimTask] = {}
        self._by_key: dict[tuple[str, str], list[SimTask]] = {}
        self._reaper_wake = trio.Event()
        self.runner = self._new_runner(f"sim-{spec.name}", list(spec.labels))
        self.rpc_counts: dict[str, int] = {}

    # ------------------------------------------------------------ public helpers

    def add_job(
        self,
        runs_on: tuple[str, ...] | list[str] = ("sim",),
        duration: float = 0.4,
        workflow: str | None = None,
        secrets: Mapping[str, str] | None = None,
        vars: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Queue a waiting job; returns its id. ``workflow`` replaces the generated YAML;
        ``context`` replaces keys of the task's simulated context (``event_name``...)."""
        job = SimJob(
            id=next(self._job_ids),
            runs_on=tuple(runs_on),
            duration=float(duration),
            workflow=workflow,
            secrets=dict(secrets or {}),
            vars=dict(vars or {}),
            handle=str(uuid.uuid4()),
            created_at=_now(),
            context=dict(context or {}),
        )
        self.jobs[job.id] = job
        self._waiting[job.id] = job
        self._bump_version()
        return job.id

    def set_faults(self, plan: FaultPlan) -> None:
        """Change the fault plan mid-run (same random stream), e.g. to end an outage."""
        self.faults.plan = plan

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job still waiting in the queue (no task yet)."""
        job = self._waiting.pop(job_id, None)
        if job is None:
            return False
        job.cancelled = True
        self._bump_version()
        return True

    def cancel_task(self, task_id: int) -> bool:
        """StopTask(cancelled), as a user cancelling the run: the next UpdateTask answer says so."""
        task = self.tasks.get(task_id)
        if task is None or task.done:
            return False
        self._stop(task, Result.CANCELLED, "cancel")
        return True

    @property
    def waiting_jobs(self) -> list[SimJob]:
        return list(self._waiting.values())

    @property
    def running_tasks(self) -> list[SimTask]:
        return list(self._running.values())

    def task_for_job(self, job_id: int) -> SimTask | None:
        job = self.jobs.get(job_id)
        return None if job is None or job.task_id is None else self.tasks[job.task_id]

    async def run_reaper(self) -> None:
        """Forgejo's ``stop_zombie_tasks`` cron, exact to the deadline rather than every 5 min."""
        if self.zombie_timeout is None:
            return
        timeout = self.zombie_timeout
        while True:
            if not self._running:
                self._reaper_wake = trio.Event()
                await self._reaper_wake.wait()
                continue
            now = trio.current_time()
            oldest = min(t.last_activity for t in self._running.values())
            if now < oldest + timeout:
                await trio.sleep_until(oldest + timeout)
                continue
            for task in [t for t in self._running.values() if now >= t.last_activity + timeout]:
                self._stop(task, Result.FAILURE, "zombie")

    # ------------------------------------------------------------ auth and identity

    def _new_runner(self, name: str, labels: list[str], version: str = "") -> SimRunner:
        runner = SimRunner(
            next(self._runner_ids), str(uuid.uuid4()), _new_token(), name, labels, version
        )
        self.runners[runner.uuid] = runner
        return runner

    def authenticate(self, headers: Mapping[str, str]) -> SimRunner:
        runner = self.runners.get(headers.get("x-runner-uuid", ""))
        token = headers.get("x-runner-token", "")
        if runner is None or not hmac.compare_digest(runner.token.encode(), token.encode()):
            raise ConnectError("unauthenticated", "unregistered runner")
        return runner

    def ping(self, body: Mapping[str, Any]) -> JSON:
        return {"data": f"Hello, {parse_string(field(body, 'data'), 'data')}!"}

    def register(self, body: Mapping[str, Any]) -> JSON:
        name = parse_string(field(body, "name"), "name")
        token = parse_string(field(body, "token"), "token")
        labels = parse_string_list(field(body, "labels"), "labels")
        version = parse_string(field(body, "version"), "version")
        parse_bool(field(body, "ephemeral"), "ephemeral")  # accepted, not simulated
        if not token or not name:
            raise ConnectError("invalid_argument", "missing runner token, name")
        if not hmac.compare_digest(token.encode(), self.registration_token.encode()):
            raise ConnectError("invalid_argument", "runner registration token not found")
        runner = self._new_runner(name[:255], labels, version)
        return {"runner": runner.message(with_token=True)}

    def declare(self, runner: SimRunner, body: Mapping[str, Any]) -> JSON:
        runner.version = parse_string(field(body, "version"), "version")
        runner.labels = parse_string_list(field(body, "labels"), "labels")
        return {"runner": runner.message(with_token=False)}

    # ------------------------------------------------------------ FetchTask

    def _bump_version(self) -> None:
        self.tasks_version += 1

    def _latest_version(self) -> int:
        if self.tasks_version == 0:  # never answer 0: the runner would take it for old Gitea
            self._bump_version()
        return self.tasks_version

    def _recover(self, runner: SimRunner, key: str | None) -> list[SimTask]:
        if self.forgejo14 or not key:
            return []
        tasks = self._by_key.get((runner.uuid, key), [])
        for task in tasks:  # the old token is only stored hashed: a new one is minted
            task.token = _new_token()
            task.tokens_issued += 1
        return list(tasks)

    def _matches(self, runner: SimRunner, job: SimJob) -> bool:
        names = runner.label_names
        return bool(job.runs_on) and bool(names) and set(job.runs_on) <= names

    def _pick(
        self,
        runner: SimRunner,
        key: str | None,
        accept: Callable[[SimJob], bool] = lambda _: True,
    ) -> SimTask | None:
        for job in self._waiting.values():
            if self._matches(runner, job) and accept(job):
                return self._create_task(runner, job, key)
        return None

    def _create_task(self, runner: SimRunner, job: SimJob, key: str | None) -> SimTask:
        del self._waiting[job.id]
        task_id = self.ledger.next_task_id()
        if job.workflow is not None:
            payload = job.workflow.encode()
            steps = _count_steps(payload) or 0
        else:
            payload = default_workflow(self.name, task_id, job.runs_on, job.duration).encode()
            steps = 2
        now = trio.current_time()
        task = SimTask(
            id=task_id,
            job=job,
            runner_uuid=runner.uuid,
            request_key=None if self.forgejo14 else key or None,
            token=_new_token(),
            payload=payload,
            assigned_at=now,
            last_activity=now,
            steps=[StoredStep(i) for i in range(steps)],
        )
        job.task_id = task_id
        self.tasks[task_id] = task
        self._running[task_id] = task
        if task.request_key:
            self._by_key.setdefault((runner.uuid, task.request_key), []).append(task)
        self.ledger.assigned(self.name, task_id, job.id, now)
        self._reaper_wake.set()
        return task

    def fetch_task(
        self, runner: SimRunner, body: Mapping[str, Any], key: str | None
    ) -> tuple[JSON, list[int]]:
        """protocol.md §5; returns the answer and the ids of the tasks it carries."""
        version = parse_int64(field(body, "tasksVersion"), "tasksVersion")
        capacity = 0
        if has_field(body, "taskCapacity"):
            capacity = parse_int64(field(body, "taskCapacity"), "taskCapacity")
        recovered = self._recover(runner, key)
        if recovered:
            return self._fetch_answer(recovered, 0), [t.id for t in recovered]
        latest = self._latest_version()
        if version == latest:
            return self._fetch_answer([], latest), []
        tasks: list[SimTask] = []
        first = self._pick(runner, key)
        if first is not None:
            tasks.append(first)
            for _ in range(capacity - 1):
                more = self._pick(runner, key)
                if more is None:
                    break
                tasks.append(more)
        return self._fetch_answer(tasks, latest), [t.id for t in tasks]

    def _fetch_answer(self, tasks: list[SimTask], version: int) -> JSON:
        out: JSON = {}
        if tasks:
            out["task"] = self.task_message(tasks[0])
        put_int64(out, "tasksVersion", version)
        if len(tasks) > 1:
            out["additionalTasks"] = [self.task_message(t) for t in tasks[1:]]
        return out

    def fetch_single_task(
        self, runner: SimRunner, body: Mapping[str, Any], key: str | None
    ) -> tuple[JSON, list[int]]:
        """Forgejo 15's FetchSingleTask: capacity 1, optional ``handle`` filter."""
        version = parse_int64(field(body, "tasksVersion"), "tasksVersion")
        handle = field(body, "handle")
        wanted = parse_string(handle, "handle") if handle is not None else ""
        recovered = self._recover(runner, key)
        if len(recovered) > 1:
            raise ConnectError(
                "internal",
                f"cannot recover {len(recovered)} tasks because runner requested only one",
            )
        if recovered:
            return {"task": self.task_message(recovered[0])}, [recovered[0].id]
        latest = self._latest_version()
        out: JSON = {}
        put_int64(out, "tasksVersion", latest)
        if version == latest:
            return out, []
        task = self._pick(runner, key, lambda job: not wanted or job.handle == wanted)
        if task is None:
            return out, []
        out["task"] = self.task_message(task)
        return out, [task.id]

    # ------------------------------------------------------------ the Task message

    def context(self, task: SimTask) -> JSON:
        """The ``github``-style context (protocol.md §10); Forgejo sends ids as strings."""
        job = task.job
        repo = f"sim/{self.name}"
        sha = f"{task.job.id:040x}"
        return {
            "action": "",
            "action_path": "",
            "action_ref": "",
            "action_repository": "",
            "actor": "sim-user",
            "actor_id": "1",
            "api_url": f"{self.base_url}/api/v1",
            "base_ref": "",
            "event": {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": repo}},
            "event_name": "push",
            "event_path": "",
            "graphql_url": "",
            "head_ref": "",
            "job": "job",
            "path": "",
            "ref": "refs/heads/main",
            "ref_name": "main",
            "ref_type": "branch",
            "repository": repo,
            "repository_id": "1",
            "repository_owner": "sim",
            "repository_owner_id": "1",
            "repositoryUrl": f"{self.base_url}/{repo}.git",
            "retention_days": "90",
            "run_attempt": "1",
            "run_id": str(job.id),
            "run_number": str(job.id),
            "server_url": self.base_url,
            "sha": sha,
            "token": task.token,
            "workflow": f"sim-{self.name}",
            "workflow_ref": f"{repo}/.forgejo/workflows/sim.yml@refs/heads/main",
            "workspace": "",
            "gitea_runtime_token": f"sim-runtime.{task.id}.{task.token}",
            "gitea_default_actions_url": DEFAULT_ACTIONS_URL,
            "forgejo_default_actions_url": DEFAULT_ACTIONS_URL,
            "forgejo_server_version": "14.0.2" if self.forgejo14 else "15.0.0",
            **job.context,
        }

    def task_message(self, task: SimTask) -> JSON:
        out: JSON = {
            "id": int64(task.id),
            "workflowPayload": b64(task.payload),
            "context": self.context(task),
        }
        secrets_map = {
            **task.job.secrets,
            "GITHUB_TOKEN": task.token,
            "GITEA_TOKEN": task.token,
            "FORGEJO_TOKEN": task.token,
        }
        put(out, "secrets", secrets_map)
        put(out, "vars", {"SIM_INSTANCE": self.name, **task.job.vars})
        return out

    # ------------------------------------------------------------ UpdateTask / UpdateLog

    def _task_of(self, runner: SimRunner, task_id: int, what: str) -> SimTask:
        task = self.tasks.get(task_id)
        if task is None:
            raise ConnectError(
                "internal", f"{what}: task with id {task_id}: resource does not exist"
            )
        if task.runner_uuid != runner.uuid:
            raise ConnectError("internal", f"{what}: invalid runner for task")
        return task

    def update_task(self, runner: SimRunner, body: Mapping[str, Any]) -> JSON:
        state = parse_object(field(body, "state"), "state")
        task_id = parse_int64(field(state, "id"), "state.id")
        result = parse_result(field(state, "result"), "state.result")
        started = parse_timestamp(field(state, "startedAt"), "state.startedAt")
        stopped = parse_timestamp(field(state, "stoppedAt"), "state.stoppedAt")
        steps = tuple(
            _parse_step(parse_object(s, f"state.steps[{i}]"), f"state.steps[{i}]")
            for i, s in enumerate(parse_list(field(state, "steps"), "state.steps"))
        )
        outputs = parse_string_map(field(body, "outputs"), "outputs")
        task = self._task_of(runner, task_id, "update task")
        now = trio.current_time()
        starts = {u.started_at for u in task.updates if u.started_at is not None}
        if started is not None and starts and started not in starts:
            self.ledger.duplicate(task.id, "executed twice: UpdateTask with a second startedAt")
        task.updates.append(UpdateRecord(now, result, started, stopped, steps, outputs, dict(body)))
        task.last_activity = now
        record = self.ledger.tasks[task.id]
        if not result.final and record.runner_final:
            # A heartbeat that was in flight when the final report overtook it (two TCP
            # connections, no ordering): harmless on Forgejo, which ignores updates of a
            # done task. A second *execution* shows as a second startedAt, above.
            self.ledger.late_update(task.id)
        if not task.done:
            if result.final:
                task.result = result
                task.stopped_at = stopped
                self._finish(task, "runner")
            by_index = {s.id: s for s in steps}
            for stored in task.steps:
                got = by_index.get(stored.index)
                step_result = Result.UNSPECIFIED
                if got is not None:
                    step_result = got.result
                    stored.log_index, stored.log_length = got.log_index, got.log_length
                    stored.started_at, stored.stopped_at = got.started_at, got.stopped_at
                if step_result.final:
                    stored.status = step_result.wire
                elif stored.started_at is not None:
                    stored.status = "running"
        if result.final:
            self.ledger.runner_final(task.id)
        # Outputs are stored even for a done task, so a late final report still gets them acked.
        for key, value in outputs.items():
            if len(key.encode()) > MAX_OUTPUT_KEY or len(value.encode()) > MAX_OUTPUT_VALUE:
                continue
            task.outputs.setdefault(key, value)
        out_state: JSON = {"id": int64(task.id)}
        put_result(out_state, "result", task.result)
        out: JSON = {"state": out_state}
        put(out, "sentOutputs", list(task.outputs))
        return out

    def update_log(self, runner: SimRunner, body: Mapping[str, Any]) -> JSON:
        task_id = parse_int64(field(body, "taskId"), "taskId")
        index = parse_int64(field(body, "index"), "index")
        rows = [
            _parse_row(parse_object(r, f"rows[{i}]"), f"rows[{i}]")
            for i, r in enumerate(parse_list(field(body, "rows"), "rows"))
        ]
        no_more = parse_bool(field(body, "noMore"), "noMore")
        task = self._task_of(runner, task_id, "get task")
        task.last_activity = trio.current_time()
        ack = len(task.log_rows)
        out: JSON = {}
        if not rows or index > ack or index + len(rows) <= ack:
            put_int64(out, "ackIndex", ack)
            return out
        if task.log_archived:  # refused rows were not written: nothing ran
            raise ConnectError("already_exists", "log file has been archived")
        if self.ledger.tasks[task.id].runner_final:
            self.ledger.duplicate(task.id, "new log rows after the runner finished it")
        task.log_rows.extend(rows[ack - index :])
        if no_more:
            task.log_archived = True
        put_int64(out, "ackIndex", len(task.log_rows))
        return out

    # ------------------------------------------------------------ endings

    def _finish(self, task: SimTask, by: FinishedBy) -> None:
        self._running.pop(task.id, None)
        self._bump_version()
        self.ledger.finished(task.id, task.result, by, _now())

    def _stop(self, task: SimTask, result: Result, by: FinishedBy) -> None:
        """Forgejo's StopTask: final status now, unfinished steps get the same status."""
        now = _utcnow()
        task.result = result
        task.stopped_at = now
        for step in task.steps:
            if not step.status.startswith("RESULT_"):
                step.status = result.wire
                step.stopped_at = step.stopped_at or now
        self._finish(task, by)


def _parse_step(obj: Mapping[str, Any], where: str) -> StepState:
    return StepState(
        id=parse_int64(field(obj, "id"), f"{where}.id"),
        result=parse_result(field(obj, "result"), f"{where}.result"),
        started_at=parse_timestamp(field(obj, "startedAt"), f"{where}.startedAt"),
        stopped_at=parse_timestamp(field(obj, "stoppedAt"), f"{where}.stoppedAt"),
        log_index=parse_int64(field(obj, "logIndex"), f"{where}.logIndex"),
        log_length=parse_int64(field(obj, "logLength"), f"{where}.logLength"),
    )


def _parse_row(obj: Mapping[str, Any], where: str) -> LogRow:
    return LogRow(
        time=parse_timestamp(field(obj, "time"), f"{where}.time"),
        content=parse_string(field(obj, "content"), f"{where}.content"),
    )


__all__ = [
    "InstanceSpec",
    "LogRow",
    "SimInstance",
    "SimJob",
    "SimRunner",
    "SimTask",
    "StepState",
    "StoredStep",
    "UpdateRecord",
    "default_workflow",
]
