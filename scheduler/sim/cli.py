"""``forgejo-scheduler sim``: run the simulator as a stand-alone server.

Meant for trying the runner by hand (``--write-config`` produces a config pointing at
every instance) and for benchmarks driven from a shell. It serves until SIGINT/SIGTERM,
prints a one-line ledger summary every few seconds and the full ledger (JSON) on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path

import trio

from scheduler.atomicfile import ensure_private_dir, write_atomic
from scheduler.sim.faults import FaultPlan
from scheduler.sim.instance import NAME_RE, InstanceSpec
from scheduler.sim.jobparser import JobPayload, WorkflowFileError, read_workflow
from scheduler.sim.server import Simulator

DESCRIPTION = (
    "Serve simulated Forgejo instances (runner.v1 over HTTP) until SIGINT/SIGTERM, with "
    "generated jobs (--rate), your own workflow (--workflow) and injected faults; "
    "--write-config writes a runner config pointing at them, to try `run` locally. Prints "
    "a one-line ledger summary every --summary-interval seconds and the full ledger (JSON) "
    "on exit."
)
SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a probability in [0, 1]: {text}")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _address(listen: tuple[str, int] | None) -> str | None:
    if listen is None:
        return None
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not NAME_RE.match(n)]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names like a,b,c: {text!r}")
    return names


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH: {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH: {text!r}")
    return low, high


def secret_arg(text: str) -> tuple[str, str]:
    """``NAME=VALUE``, or ``NAME`` alone for the value of the environment variable NAME."""
    name, sep, value = text.partition("=")
    if not SECRET_NAME_RE.match(name):
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME made of letters, digits and _: {name!r}"
        )
    if not sep:
        if name not in os.environ:
            raise argparse.ArgumentTypeError(
                f"{name}: no =VALUE given and no such environment variable"
            )
        value = os.environ[name]
    return name, value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="where to serve every instance (default 127.0.0.1 on a free port)")
    parser.add_argument("--instances", type=_names, default=["a"], metavar="a,b,c",
                        help="instance names, each served under /NAME (default a)")
    parser.add_argument("--forgejo14", action="store_true", help="Forgejo 14: no request keys")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the job arrivals and of the faults (default 0)")
    parser.add_argument("--rate", type=float, default=0.5, help="jobs/s per instance")
    parser.add_argument("--duration-range", type=_pair, default=(0.5, 3.0), metavar="LOW,HIGH",
                        help="seconds each generated job sleeps, uniform in [LOW, HIGH]")
    parser.add_argument("--max-jobs", type=int, default=None, help="per instance")
    parser.add_argument("--zombie-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="a running task silent this long is failed, as Forgejo's "
                        "zombie cron does (0 = never; default 600)")
    own = parser.add_argument_group("your own workflow")
    own.add_argument("--workflow", type=Path, default=None, metavar="FILE",
                     help="queue this workflow file's jobs (each job is its own task, as "
                     "Forgejo splits them; `needs` order and matrices are not simulated); "
                     "with --write-config its literal runs-on labels are declared as "
                     "NAME:host")
    own.add_argument("--instance", default=None, metavar="NAME",
                     help="the instance --workflow is queued on (default: the first one)")
    own.add_argument("--repeat", type=_positive, default=1, metavar="N",
                     help="queue the workflow N times (default 1)")
    own.add_argument("--secret", type=secret_arg, action="append", default=[],
                     metavar="NAME=VALUE",
                     help="a secret of the queued jobs (repeatable; NAME alone takes the "
                     "environment variable's value)")
    faults = parser.add_argument_group("faults (FetchTask unless named otherwise)")
    faults.add_argument("--drop-after-assign", type=_probability, default=0.0, metavar="P",
                        help="assign the tasks, then close the connection unanswered")
    faults.add_argument("--error-5xx", type=_probability, default=0.0, metavar="P",
                        help="answer 503 unavailable before assigning")
    faults.add_argument("--internal-error", type=_probability, default=0.0, metavar="P",
                        help="answer 500 internal before assigning")
    faults.add_argument("--reset-before-assign", type=_probability, default=0.0, metavar="P",
                        help="reset the TCP connection before assigning")
    faults.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="added to every answer, after the tasks are assigned")
    faults.add_argument(
        "--stall", type=_pair, action="append", default=[], metavar="START,END",
        help="seconds after start during which FetchTask never answers (repeatable)",
    )  # fmt: skip
    faults.add_argument("--fail-update-log", type=_probability, default=0.0, metavar="P",
                        help="UpdateLog answers 503")
    faults.add_argument("--fail-update-task", type=_probability, default=0.0, metavar="P",
                        help="UpdateTask answers 503")
    cfg = parser.add_argument_group("runner config")
    cfg.add_argument("--write-config", type=Path, default=None, metavar="PATH",
                     help="write a runner config.toml pointing at every instance "
                     "(tokens in 0600 files next to it)")
    cfg.add_argument("--capacity", type=int, default=4, help="its [runner] capacity")
    cfg.add_argument("--state-dir", type=Path, default=None, help="default: next to the config")
    cfg.add_argument("--fetch-interval", default="1s", help="its fetch_interval (default 1s)")
    cfg.add_argument("--shutdown-timeout", default=None, help="default: the runner's (10m)")
    cfg.add_argument(
        "--metrics-listen", default="127.0.0.1:0", metavar="HOST:PORT",
        help="the runner's [metrics] listen (default 127.0.0.1:0)",
    )  # fmt: skip
    cfg.add_argument(
        "--advertise", type=_listen, default=None, metavar="HOST:PORT",
        help="address the runner reaches the simulator at, written into the URLs instead "
        "of --listen's (e.g. a container's service name when listening on 0.0.0.0)",
    )  # fmt: skip
    parser.add_argument(
        "--registration-tokens",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each instance's runner registration token to DIR/<instance>.token "
        "(0600), to try `forgejo-scheduler register` against the simulator",
    )
    parser.add_argument("--summary-interval", type=float, default=5.0, metavar="SECONDS",
                        help="print the ledger's one-line summary this often (default 5)")


def build_simulator(args: argparse.Namespace) -> Simulator:
    plan = FaultPlan(
        drop_after_assign=args.drop_after_assign,
        error_5xx=args.error_5xx,
        internal_error=args.internal_error,
        reset_before_assign=args.reset_before_assign,
        delay=args.delay,
        stall_windows=tuple(args.stall),
        fail_update_log=args.fail_update_log,
        fail_update_task=args.fail_update_task,
    )
    specs = [
        InstanceSpec(
            name,
            forgejo14=args.forgejo14,
            faults=plan,
            rate=args.rate,
            duration_range=args.duration_range,
            max_jobs=args.max_jobs,
            zombie_timeout=args.zombie_timeout if args.zombie_timeout > 0 else None,
        )
        for name in args.instances
    ]
    return Simulator(specs, seed=args.seed)


def _write_registration_tokens(sim: Simulator, directory: Path) -> None:
    ensure_private_dir(directory, parent_too=False)
    for name, instance in sim.instances.items():
        path = directory / f"{name}.token"
        write_atomic(path, (instance.registration_token + "\n").encode())
        print(f"  {name}: registration token in {path}", flush=True)


def workflow_jobs(args: argparse.Namespace) -> list[JobPayload]:
    """The jobs ``--workflow`` queues (checked before anything is served)."""
    if args.workflow is None:
        if args.instance is not None or args.secret or args.repeat != 1:
            raise WorkflowFileError("--instance, --repeat and --secret go with --workflow FILE")
        return []
    if args.instance is not None and args.instance not in args.instances:
        raise WorkflowFileError(
            f"--instance {args.instance}: no such instance (--instances is "
            f"{','.join(args.instances)})"
        )
    return read_workflow(args.workflow)


def runner_labels(jobs: list[JobPayload]) -> list[str]:
    """The written config's labels: ``sim:host`` and every literal runs-on of the jobs."""
    labels = ["sim:host"]
    for job in jobs:
        labels += [f"{name}:host" for name in job.runs_on if f"{name}:host" not in labels]
    return labels


def queue_workflow(sim: Simulator, args: argparse.Namespace, jobs: list[JobPayload]) -> None:
    if not jobs:
        return
    name = args.instance or next(iter(sim.instances))
    inst = sim.instances[name]
    for _ in range(args.repeat):
        for job in jobs:
            inst.add_job(runs_on=job.runs_on or inst.spec.runs_on, workflow=job.payload,
                         secrets=dict(args.secret))
    for job in jobs:
        runs_on = ",".join(job.runs_on or inst.spec.runs_on)
        print(f"queued {args.repeat} x job {job.id} of {args.workflow} on {name} "
              f"(runs-on {runs_on}: taken by a runner with a label of that name)", flush=True)


async def _main(args: argparse.Namespace, jobs: list[JobPayload]) -> None:
    sim = build_simulator(args)
    queue_workflow(sim, args, jobs)
    host, port = args.listen
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, host, port)
            mode = "Forgejo 14" if args.forgejo14 else "Forgejo 15"
            print(f"simulator ({mode}, seed {args.seed}) serving:", flush=True)
            for name in sim.instances:
                print(f"  {name}: {sim.base_url(name)}", flush=True)
            if args.write_config is not None:
                state_dir = args.state_dir or args.write_config.parent / "state"
                path = sim.write_runner_config(
                    args.write_config,
                    capacity=args.capacity,
                    state_dir=state_dir,
                    fetch_interval=args.fetch_interval,
                    shutdown_timeout=args.shutdown_timeout,
                    metrics_listen=args.metrics_listen,
                    advertise=_address(args.advertise),
                    labels=runner_labels(jobs),
                )
                print(f"runner config written to {path}", flush=True)
            if args.registration_tokens is not None:
                _write_registration_tokens(sim, args.registration_tokens)

            async def summaries() -> None:
                while True:
                    await trio.sleep(args.summary_interval)
                    print(f"ledger: {sim.ledger.summary()}", flush=True)

            nursery.start_soon(summaries)
            async for signum in signals:
                print(f"received {signal.Signals(signum).name}, stopping", flush=True)
                nursery.cancel_scope.cancel()
                break
    print(json.dumps(sim.report(), indent=2), flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        jobs = workflow_jobs(args)
    except WorkflowFileError as bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    failed = False
    try:
        trio.run(_main, args, jobs)
    except* OSError as group:  # e.g. the port is taken
        for exc in group.exceptions:
            print(f"sim: {exc}", file=sys.stderr)
        failed = True
    return 1 if failed else 0
