"""Figure 7: a foreign client, the PyPI package ``snakey-runner``, against our simulator.

The point is the simulator, not the client: a runner written by someone else from the
same protocol fetches, runs and reports tasks on it, so the simulator speaks the
protocol others speak (and is not only consistent with our own client).

``snakey-runner`` 0.1.0 needs Python >= 3.13, and this project's venv may be older,
so it gets a venv of its own under ``~/.cache/forgejo-scheduler-bench/`` made with the
first interpreter >= 3.13 found (``python3.13``/``python3.14`` on PATH, pyenv
versions, ``/usr/bin``). Every command tried is recorded; if any step fails, the
figure says which one and why instead of a number.

The run is in real time (the client is another process with its own clock): the
simulator serves on loopback, ``snakey_runner setup`` declares the runner with
``XDG_CONFIG_HOME`` pointing at a temporary directory, ``snakey_runner run`` polls
(FetchSingleTask every 2.4 s) and runs each job's steps with bash; we wait until the
simulator's ledger shows the jobs finished (at most ``timeout`` s), then SIGINT it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from scheduler.sim import InstanceSpec, Simulator

PACKAGE = "snakey-runner==0.1.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forgejo-scheduler-bench"


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_python(tried: list[str]) -> str | None:
    """The first interpreter >= 3.13; every candidate looked at is appended to ``tried``."""
    candidates = [shutil.which(n) for n in ("python3.14", "python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")))
    candidates += sorted(glob.glob("/usr/bin/python3.1[3-9]"))
    for c in candidates:
        if not c:
            continue
        v = _version(c)
        tried.append(f"{c}: {f'{v[0]}.{v[1]}' if v else 'does not run'}")
        if v and v >= (3, 13):
            return c
    return None


def _step(log: list[dict[str, Any]], argv: list[str], **kwargs: Any) -> bool:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    tail = [ln for ln in lines if "is ignored: it is neither" not in ln][-3:]
    log.append({"command": " ".join(argv), "exit": proc.returncode, "tail": tail})
    return proc.returncode == 0


def install(log: list[dict[str, Any]], tried: list[str]) -> Path | None:
    """A venv with snakey-runner; None (with the reason in ``log``) if it cannot be had."""
    venv = CACHE / "snakey-runner-venv"
    exe = venv / "bin" / "snakey_runner"
    if exe.exists():
        log.append({"command": f"(cached) {exe}", "exit": 0, "tail": []})
        return exe
    python = find_python(tried)
    if python is None:
        log.append({"command": "find a Python >= 3.13", "exit": 1,
                    "tail": ["no interpreter >= 3.13 found; snakey-runner requires >= 3.13"]})
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    if not _step(log, [python, "-m", "venv", str(venv)]):
        return None
    if not _step(log, [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", PACKAGE]):
        shutil.rmtree(venv, ignore_errors=True)
        return None
    return exe


async def _drive(exe: Path, forgejo14: bool, jobs: int, limit: float) -> dict[str, Any]:
    sim = Simulator([InstanceSpec("s", forgejo14=forgejo14, zombie_timeout=None)], seed=1)
    inst = sim.instances["s"]
    for _ in range(jobs):
        inst.add_job(duration=0.5)
    out: dict[str, Any] = {"forgejo": 14 if forgejo14 else 15, "jobs": jobs}
    with tempfile.TemporaryDirectory(prefix="bench-snakey-") as tmp:
        env = {**os.environ, "XDG_CONFIG_HOME": tmp, "PYTHONUNBUFFERED": "1"}
        (Path(tmp) / "snakey-runner").mkdir()
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.serve, "127.0.0.1", 0)
            setup = await trio.run_process(
                [str(exe), "setup", "--url", sim.base_url("s"), "--uuid", inst.runner.uuid,
                 "--token", inst.runner.token, "-l", "sim"],
                env=env, capture_stdout=True, capture_stderr=True, check=False,
            )
            out["setup_exit"] = setup.returncode
            log_path = Path(tmp) / "run.log"
            with open(log_path, "wb") as log_file:  # noqa: ASYNC230 (a child's stdout)
                proc = await trio.lowlevel.open_process(
                    [str(exe), "run"], env=env, stdout=log_file, stderr=subprocess.STDOUT
                )
                t0 = trio.current_time()
                with trio.move_on_after(limit):
                    while sim.ledger.statistics().finished < jobs and proc.poll() is None:  # noqa: ASYNC110
                        await trio.sleep(0.2)
                out["seconds"] = round(trio.current_time() - t0, 1)
                out["exited_by_itself"] = proc.poll() is not None
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    with trio.move_on_after(5):
                        await proc.wait()
                    if proc.poll() is None:
                        proc.kill()
                        await proc.wait()
                out["exit"] = proc.returncode
            out["output_tail"] = log_path.read_text(errors="replace").strip().splitlines()[-4:]
            nursery.cancel_scope.cancel()
    snap = sim.ledger.statistics().to_json()
    out["ledger"] = {k: snap[k] for k in ("assigned", "delivered", "finished", "lost",
                                         "duplicate_executions", "results")}
    out["rpc_counts"] = dict(sorted(inst.rpc_counts.items()))
    out["tasks"] = [
        {"id": t.id, "result": t.result.wire, "steps": [s.status for s in t.steps],
         "log_rows": len(t.log_rows), "log_archived": t.log_archived,
         "request_key": t.request_key is not None}
        for t in inst.tasks.values()
    ]
    out["http_errors"] = len(sim.http.errors)
    return out


def measure(jobs: int = 3, timeout: float = 60.0) -> dict[str, Any]:
    log: list[dict[str, Any]] = []
    tried: list[str] = []
    result: dict[str, Any] = {"package": PACKAGE, "host_python": sys.version.split()[0],
                              "commands": log, "interpreters": tried}
    exe = install(log, tried)
    if exe is None:
        result["ran"] = False
        return result
    result["ran"] = True
    v = _version(str(exe.parent / "python"))
    result["client_python"] = f"{v[0]}.{v[1]}" if v else "?"
    result["runs"] = [trio.run(_drive, exe, False, jobs, timeout),
                      trio.run(_drive, exe, True, 1, 15.0)]
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
