"""The Simulator: several simulated Forgejo instances behind one loopback port.

Instance ``a`` lives under the path prefix ``/a`` (like a Forgejo with a sub-path
ROOT_URL), so its RPCs are ``/a/api/actions/runner.v1.RunnerService/<Method>``. This
module routes requests, applies the Connect rules that sit in front of a handler
(405/415/404, auth, JSON errors), injects faults, and tells the ledger which tasks were
actually delivered.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import trio

from scheduler.sim.faults import FaultInjector, PreFault
from scheduler.sim.http11 import Disconnect, HttpServer, Request, Response
from scheduler.sim.instance import InstanceSpec, SimInstance
from scheduler.sim.ledger import Ledger
from scheduler.sim.wire import ConnectError, dumps, parse_body
from scheduler.sim.workload import Workload

_ROUTE = re.compile(r"^/([A-Za-z0-9_-]+)/api/actions/([A-Za-z0-9_.]+)/([A-Za-z0-9_]+)$")
_RUNNER = "runner.v1.RunnerService"
_PING = "ping.v1.PingService"
_PROCEDURES_14 = frozenset(
    {
        (_PING, "Ping"),
        (_RUNNER, "Register"),
        (_RUNNER, "Declare"),
        (_RUNNER, "FetchTask"),
        (_RUNNER, "UpdateTask"),
        (_RUNNER, "UpdateLog"),
    }
)
_PROCEDURES_15 = _PROCEDURES_14 | {(_RUNNER, "FetchSingleTask")}
_JSON_TYPES = ("application/json", "application/json; charset=utf-8")

Duration = str | int | float
TomlValue = str | int | float | bool | list[str]


def _not_found() -> Response:
    return Response(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")


def _error(exc: ConnectError) -> Response:
    return Response(exc.http_status, exc.body())


class Simulator:
    """Simulated Forgejo instances, one shared ledger, one HTTP port.

    Start with ``host, port = await nursery.start(sim.serve, "127.0.0.1", 0)``; cancel the
    nursery to stop. ``specs`` may be instance names (all defaults) or ``InstanceSpec``s.
    """

    def __init__(
        self,
        specs: Iterable[InstanceSpec | str] = ("a",),
        *,
        seed: int = 0,
        gzip_responses: bool = True,
    ) -> None:
        self.seed = seed
        self.ledger = Ledger()
        self.instances: dict[str, SimInstance] = {}
        self.workloads: dict[str, Workload] = {}
        self.started_at: float | None = None
        self.address: tuple[str, int] | None = None
        job_ids = itertools.count(1)
        for item in specs:
            spec = InstanceSpec(item) if isinstance(item, str) else item
            if spec.name in self.instances:
                raise ValueError(f"duplicate instance name {spec.name!r}")
            injector = FaultInjector(spec.faults, random.Random(f"{seed}/{spec.name}/faults"))
            inst = SimInstance(spec, self.ledger, injector, job_ids)
            self.instances[spec.name] = inst
            self.ledger.add_instance(spec.name)
            self.workloads[spec.name] = Workload(
                inst,
                spec.rate,
                spec.duration_range,
                random.Random(f"{seed}/{spec.name}/workload"),
                spec.max_jobs,
                spec.runs_on,
            )
        if not self.instances:
            raise ValueError("a simulator needs at least one instance")
        self.http = HttpServer(self._handle, gzip_min_bytes=1024 if gzip_responses else None)

    # ------------------------------------------------------------ lifecycle

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled: HTTP, zombie reapers and job arrivals."""
        async with trio.open_nursery() as nursery:
            self.started_at = trio.current_time()
            self.address = await nursery.start(self.http.serve, host, port)
            for name, inst in self.instances.items():
                inst.base_url = self.base_url(name)
                nursery.start_soon(inst.run_reaper)
                nursery.start_soon(self.workloads[name].run)
            task_status.started(self.address)

    def report(self) -> dict[str, Any]:
        """The ledger plus each instance's queue, RPC and fault counters; JSON-able."""
        return {
            "ledger": self.ledger.statistics().to_json(),
            "instances": {
                name: {
                    "forgejo": 14 if inst.forgejo14 else 15,
                    "jobs": len(inst.jobs),
                    "waiting": len(inst.waiting_jobs),
                    "running": len(inst.running_tasks),
                    "tasks_version": inst.tasks_version,
                    "rpc_counts": dict(sorted(inst.rpc_counts.items())),
                    "faults_injected": dict(sorted(inst.faults.injected.items())),
                }
                for name, inst in self.instances.items()
            },
        }

    def stop_arrivals(self) -> None:
        for workload in self.workloads.values():
            workload.stop()

    def base_url(self, name: str) -> str:
        if self.address is None:
            raise RuntimeError("the simulator is not serving yet")
        if name not in self.instances:
            raise KeyError(name)
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/{name}"

    # ------------------------------------------------------------ HTTP → RPC

    async def _handle(self, req: Request) -> Response | Disconnect:
        m = _ROUTE.match(req.path)
        if m is None or m.group(1) not in self.instances:
            return _not_found()
        inst = self.instances[m.group(1)]
        service, method = m.group(2), m.group(3)
        if (service, method) not in (_PROCEDURES_14 if inst.forgejo14 else _PROCEDURES_15):
            return _not_found()
        if req.method != "POST":
            return Response(
                405,
                b"405 method not allowed\n",
                content_type="text/plain; charset=utf-8",
                headers=(("allow", "POST"),),
            )
        ctype = req.headers.get("content-type", "").strip().lower()
        if ctype.replace(" ", "") not in (t.replace(" ", "") for t in _JSON_TYPES):
            return Response(
                415, b"", content_type="text/plain", headers=(("accept-post", _JSON_TYPES[0]),)
            )
        inst.rpc_counts[method] = inst.rpc_counts.get(method, 0) + 1
        try:
            version = req.headers.get("connect-protocol-version")
            if version is not None and version.strip() != "1":
                raise ConnectError(
                    "invalid_argument", f'connect-protocol-version must be "1": got "{version}"'
                )
            body = parse_body(req.body)
            return await self._dispatch(inst, method, req, body)
        except ConnectError as exc:
            return _error(exc)

    async def _dispatch(
        self, inst: SimInstance, method: str, req: Request, body: Mapping[str, object]
    ) -> Response | Disconnect:
        if method == "Ping":
            return Response(200, dumps(inst.ping(body)))
        if method == "Register":
            return Response(200, dumps(inst.register(body)))
        if method in ("FetchTask", "FetchSingleTask"):
            since = trio.current_time() - (self.started_at or 0.0)
            pre = inst.faults.before_fetch(since)
            if pre is PreFault.STALL:
                return Disconnect.STALL
            if pre is PreFault.RESET:
                return Disconnect.RESET
            if pre is PreFault.UNAVAILABLE:
                raise ConnectError("unavailable", "simulated: service unavailable")
            if pre is PreFault.INTERNAL:
                raise ConnectError("internal", "simulated: internal error")
        runner = inst.authenticate(req.headers)
        if method == "Declare":
            return Response(200, dumps(inst.declare(runner, body)))
        if method == "UpdateTask":
            if inst.faults.fail_update_task():
                raise ConnectError("unavailable", "simulated: service unavailable")
            return Response(200, dumps(inst.update_task(runner, body)))
        if method == "UpdateLog":
            if inst.faults.fail_update_log():
                raise ConnectError("unavailable", "simulated: service unavailable")
            return Response(200, dumps(inst.update_log(runner, body)))
        key = req.headers.get("x-runner-request-key") or None
        if method == "FetchTask":
            answer, ids = inst.fetch_task(runner, body, key)
        else:
            answer, ids = inst.fetch_single_task(runner, body, key)
        if ids and inst.faults.drop_answer():
            return Disconnect.CLOSE
        if inst.faults.plan.delay > 0:
            await trio.sleep(inst.faults.plan.delay)

        def delivered() -> None:
            self.ledger.delivered(ids)

        return Response(200, dumps(answer), on_delivered=delivered if ids else None)

    # ------------------------------------------------------------ runner config

    def write_runner_config(
        self,
        path: str | os.PathLike[str],
        *,
        capacity: int,
        state_dir: str | os.PathLike[str],
        fetch_interval: Duration | None = None,
        fetch_timeout: Duration | None = None,
        report_interval: Duration | None = None,
        shutdown_timeout: Duration | None = None,
        labels: Iterable[str] = ("sim:host",),
        connections: Mapping[str, Mapping[str, TomlValue | Duration]] | None = None,
        metrics_listen: str = "127.0.0.1:0",
        advertise: str | None = None,
    ) -> Path:
        """Write a TOML config for our runner pointing at every instance; returns its path.

        Each connection's token goes to a 0600 file next to the config
        (``<config stem>.<instance>.token``). ``connections`` adds per-connection keys
        (``weight``, ``min_slots``, ``max_slots``, ``fetch_interval``, ...).
        ``advertise`` ("host:port") replaces the listening address in the URLs, for a
        runner that reaches the simulator under another name (a container's service name,
        when the simulator listens on 0.0.0.0).
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        label_list = list(labels)
        lines = ["[runner]", f"capacity = {int(capacity)}", f"state_dir = {_toml(str(state_dir))}"]
        lines.append(f"labels = {_toml(label_list)}")
        for key, value in (
            ("fetch_interval", fetch_interval),
            ("fetch_timeout", fetch_timeout),
            ("report_interval", report_interval),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if value is not None:
                lines.append(f"{key} = {_toml(duration_text(value))}")
        lines += ["", "[metrics]", f"listen = {_toml(metrics_listen)}"]
        extra = connections or {}
        for name, inst in self.instances.items():
            url = self.base_url(name) if advertise is None else f"http://{advertise}/{name}"
            token_file = target.parent / f"{target.stem}.{name}.token"
            _write_secret(token_file, inst.runner.token)
            lines += [
                "",
                f"[connections.{name}]",
                f"url = {_toml(url)}",
                f"uuid = {_toml(inst.runner.uuid)}",
                f"token_file = {_toml(str(token_file))}",
                f"labels = {_toml(label_list)}",
            ]
            for key, opt in extra.get(name, {}).items():
                if key == "fetch_interval" and isinstance(opt, int | float):
                    opt = duration_text(opt)
                lines.append(f"{key} = {_toml(opt)}")
        text = "\n".join(lines) + "\n"
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)
        return target


def duration_text(value: Duration) -> str:
    """Seconds → our config's duration strings ("2s", "250ms"); strings pass through."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(float(value) * 1000)}ms"


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    os.chmod(path, 0o600)
