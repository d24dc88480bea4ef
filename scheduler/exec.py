"""``forgejo-scheduler exec WORKFLOW``: run one job of a workflow file here and now, like
``act`` or ``forgejo-runner exec``, through the same parts a real task goes through.

A thin composition: a one-instance Simulator with the job queued on it, a runner config
written to a temporary directory (state, work directories, token file), and the Service
exactly as ``run`` runs it: FetchTask, the host executor, UpdateLog/UpdateTask. The only
difference is the executor's labels: every job runs on this host whatever its
``runs-on`` says (act's ``-self-hosted``). The job's log rows are printed as the
simulated server stores them (the service reports every 200 ms), so what you see is
what Forgejo would show.

One job per run, as one task is one job: a workflow with several jobs needs ``--job``,
and that job runs without the results or outputs of the jobs it ``needs``. Matrices
are not expanded. The workspace starts empty, as on a runner.

Exit status: 0 when the job succeeded (or was skipped by its ``if:``), 1 otherwise,
2 for a bad command line or workflow file. SIGINT/SIGTERM cancel the job (it is still
reported, and its processes are killed).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from scheduler.config import load_config
from scheduler.executor.host import HostExecutor
from scheduler.logs import setup_logging
from scheduler.service import Service, Started
from scheduler.sim import InstanceSpec, Result, SimTask, Simulator
from scheduler.sim.cli import secret_arg
from scheduler.sim.jobparser import JobPayload, WorkflowFileError, read_workflow

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Run one job of a workflow file on this host, like forgejo-runner exec: the job is "
    "queued on a simulated Forgejo and run by the real service and host executor (whatever "
    "its runs-on says); its log is printed as it runs. One job per run: a workflow with "
    "several jobs needs --job, and the job runs without the results and outputs of the jobs "
    "it needs; matrices are not expanded; the workspace starts empty. Exit 0 when the job "
    "succeeded or was skipped, 1 otherwise, 2 for bad input."
)
INSTANCE = "exec"
POLL = 0.1  # how often the stored log rows are looked at
PASSED = (Result.SUCCESS, Result.SKIPPED)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, metavar="WORKFLOW",
                        help="the workflow file (e.g. .forgejo/workflows/ci.yml)")
    parser.add_argument("--job", "-j", default=None, metavar="ID",
                        help="the job to run (needed when the workflow has several; it runs "
                        "alone, without the results and outputs of the jobs it needs)")
    parser.add_argument("--event", "-E", default="push", metavar="NAME",
                        help="github.event_name of the run (default push)")
    parser.add_argument("--input", action="append", type=_input_arg, default=[],
                        metavar="NAME=VALUE",
                        help="an input of a workflow_dispatch event (repeatable)")
    parser.add_argument("--secret", "-s", action="append", type=secret_arg, default=[],
                        metavar="NAME=VALUE",
                        help="a secret of the job, masked in its log (repeatable; NAME alone "
                        "takes the environment variable's value)")
    parser.add_argument("--var", action="append", type=secret_arg, default=[],
                        metavar="NAME=VALUE",
                        help="a configuration variable, vars.NAME (repeatable; NAME alone "
                        "takes the environment variable's value)")


def _input_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE: {text!r}")
    return name, value


@attrs.frozen
class ExecRequest:
    """What to run: one job's payload and what the simulated server hands with it."""

    job: JobPayload
    event: str = "push"
    inputs: Mapping[str, str] = attrs.field(factory=dict)
    secrets: Mapping[str, str] = attrs.field(factory=dict)
    vars: Mapping[str, str] = attrs.field(factory=dict)

    def context(self) -> dict[str, Any]:
        """The task context keys that replace the simulated ones."""
        out: dict[str, Any] = {"event_name": self.event, "job": self.job.id}
        if self.inputs:
            out["event"] = {"ref": "refs/heads/main", "inputs": dict(self.inputs)}
        return out


def pick_job(jobs: Sequence[JobPayload], wanted: str | None) -> JobPayload:
    """The job ``--job`` names, or the only one; a clear error otherwise."""
    ids = ", ".join(job.id for job in jobs)
    if wanted is None:
        if len(jobs) > 1:
            raise WorkflowFileError(
                f"the workflow has {len(jobs)} jobs ({ids}): pick one with --job ID"
            )
        return jobs[0]
    for job in jobs:
        if job.id == wanted:
            return job
    raise WorkflowFileError(f"--job {wanted}: no such job (the workflow has: {ids})")


def run(args: argparse.Namespace) -> int:
    try:
        job = pick_job(read_workflow(args.workflow), args.job)
    except WorkflowFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The job's log is the output; the service's per-task INFO lines would interleave.
    setup_logging("WARNING" if args.log_level.upper() == "INFO" else args.log_level,
                  secrets=[value for _, value in args.secret], fmt=args.log_format)
    if job.needs:
        print(f"note: job {job.id} needs {', '.join(job.needs)}; it runs alone, without "
              "their results and outputs", file=sys.stderr)
    request = ExecRequest(job, args.event, dict(args.input), dict(args.secret), dict(args.var))
    result = trio.run(exec_job, request, sys.stdout)
    print(f"job {job.id}: {result.wire.removeprefix('RESULT_').lower()}", file=sys.stderr)
    return 0 if result in PASSED else 1


async def exec_job(request: ExecRequest, out: TextIO) -> Result:
    """Run the job through simulator + service; print its log rows; return its result."""
    with tempfile.TemporaryDirectory(prefix="forgejo-scheduler-exec-") as tmp:
        sim = Simulator([InstanceSpec(INSTANCE, labels=("exec",), zombie_timeout=None)])
        inst = sim.instances[INSTANCE]
        job_id = inst.add_job(
            runs_on=("exec",), workflow=request.job.payload, secrets=request.secrets,
            vars=request.vars, context=request.context(),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            path = sim.write_runner_config(
                Path(tmp) / "config.toml", capacity=1, state_dir=Path(tmp) / "state",
                fetch_interval="1s", report_interval="200ms", shutdown_timeout="10s",
                labels=("exec:host",),
            )
            service = Service(
                load_config(path), executor=HostExecutor(Path(tmp) / "work", labels=None)
            )
            done = trio.Event()

            async def run_service(task_status: trio.TaskStatus[Started]) -> None:
                try:
                    await service.run(task_status=task_status)
                finally:
                    done.set()

            await nursery.start(run_service)
            nursery.start_soon(_cancel_on_signal, service)
            printer = RowPrinter(out)
            while not done.is_set():
                task = inst.task_for_job(job_id)
                if task is not None:
                    printer.print_new(task)
                    if task.done:
                        break
                await trio.sleep(POLL)
            service.request_stop()  # returns once the final report is acknowledged
            await done.wait()
            task = inst.task_for_job(job_id)
            if task is not None:
                printer.print_new(task)
            nursery.cancel_scope.cancel()
    if task is None:
        print("error: the service stopped before it took the job", file=sys.stderr)
        return Result.FAILURE
    return task.result


@attrs.define
class RowPrinter:
    """Prints the rows the simulated server stored since the last call."""

    out: TextIO
    printed: int = 0

    def print_new(self, task: SimTask) -> None:
        rows = task.log_rows[self.printed:]
        for row in rows:
            print(row.content, file=self.out)
        self.printed += len(rows)
        if rows:
            self.out.flush()


async def _cancel_on_signal(service: Service) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.warning("cancelling the job")
            service.abort()
