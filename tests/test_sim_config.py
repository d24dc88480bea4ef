"""``write_runner_config`` and the ``sim`` command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import trio

from scheduler.sim import InstanceSpec, Simulator
from scheduler.sim.cli import add_arguments, build_simulator
from scheduler.sim.server import duration_text
from tests.support.sim import Rpc, running_sim

ROOT = Path(__file__).resolve().parent.parent


def read_secret(path: str) -> str:
    """The token, after checking the file is private (0600)."""
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return Path(path).read_text()


async def test_write_runner_config(tmp_path: Path) -> None:
    async with running_sim("a", "b") as sim, httpx.AsyncClient() as client:
        path = sim.write_runner_config(
            tmp_path / "conf" / "runner.toml",
            capacity=3,
            state_dir=tmp_path / "state",
            fetch_interval=0.25,
            shutdown_timeout=30,
            connections={"b": {"weight": 2, "max_slots": 1, "fetch_interval": 2}},
        )
        config = tomllib.loads(path.read_text())
        assert config["runner"] == {
            "capacity": 3,
            "state_dir": str(tmp_path / "state"),
            "labels": ["sim:host"],
            "fetch_interval": "250ms",
            "shutdown_timeout": "30s",
        }
        assert config["metrics"] == {"listen": "127.0.0.1:0"}
        assert set(config["connections"]) == {"a", "b"}
        for name, conn in config["connections"].items():
            inst = sim.instances[name]
            assert conn["url"] == sim.base_url(name)
            assert conn["uuid"] == inst.runner.uuid
            assert conn["labels"] == ["sim:host"]
            assert Path(conn["token_file"]).parent == path.parent
            assert read_secret(conn["token_file"]) == inst.runner.token
        assert config["connections"]["b"]["weight"] == 2
        assert config["connections"]["b"]["max_slots"] == 1
        assert config["connections"]["b"]["fetch_interval"] == "2s"
        # The URL + uuid + token from the files really authenticate.
        conn = config["connections"]["a"]
        resp = await client.post(
            conn["url"] + "/api/actions/runner.v1.RunnerService/Declare",
            json={"labels": ["sim:host"]},
            headers={
                "x-runner-uuid": conn["uuid"],
                "x-runner-token": read_secret(conn["token_file"]),
            },
        )
        assert resp.status_code == 200
        assert (await Rpc(sim, client).fetch())["tasksVersion"] == "1"


async def test_write_runner_config_for_a_container(tmp_path: Path) -> None:
    """What examples/compose.sim.yaml uses: the sim listens on 0.0.0.0 in its container
    and the runner, in another container, reaches it by service name."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--advertise", "forgejo:3000", "--metrics-listen", "0.0.0.0:9464",
         "--shutdown-timeout", "30s"]
    )  # fmt: skip
    assert args.advertise == ("forgejo", 3000)
    async with running_sim("a") as sim:
        path = sim.write_runner_config(
            tmp_path / "config.toml", capacity=2, state_dir=tmp_path / "state",
            shutdown_timeout=args.shutdown_timeout, metrics_listen=args.metrics_listen,
            advertise="forgejo:3000",
        )  # fmt: skip
    config = tomllib.loads(path.read_text())
    assert config["connections"]["a"]["url"] == "http://forgejo:3000/a"
    assert config["metrics"] == {"listen": "0.0.0.0:9464"}
    assert config["runner"]["shutdown_timeout"] == "30s"


def test_write_runner_config_needs_a_running_simulator(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        Simulator(["a"]).write_runner_config(tmp_path / "c.toml", capacity=1, state_dir=tmp_path)


def test_specs_validate() -> None:
    with pytest.raises(ValueError):
        InstanceSpec("a/b")
    with pytest.raises(ValueError):
        InstanceSpec("a", duration_range=(3, 1))
    with pytest.raises(ValueError):
        Simulator(["a", "a"])
    assert duration_text("5m") == "5m" and duration_text(2.0) == "2s"


def test_cli_arguments_build_a_simulator() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--listen",
            "127.0.0.1:0",
            "--instances",
            "a,b,c",
            "--drop-after-assign",
            "0.1",
            "--error-5xx",
            "0.05",
            "--rate",
            "2",
            "--duration-range",
            "0.5,3",
            "--forgejo14",
            "--seed",
            "9",
            "--stall",
            "10,20",
        ]
    )
    sim = build_simulator(args)
    assert list(sim.instances) == ["a", "b", "c"]
    inst = sim.instances["b"]
    assert inst.forgejo14 and inst.spec.rate == 2.0 and inst.spec.duration_range == (0.5, 3.0)
    assert inst.faults.plan.drop_after_assign == 0.1 and inst.faults.plan.error_5xx == 0.05
    assert inst.faults.plan.stall_windows == ((10.0, 20.0),)
    for bad in (["--instances", "a,a"], ["--error-5xx", "2"], ["--listen", "nope"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


_CLI = (
    "import argparse, sys\n"
    "from scheduler.sim import cli\n"
    "p = argparse.ArgumentParser()\n"
    "cli.add_arguments(p)\n"
    "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n"
)


@pytest.mark.slow
async def test_cli_serves_until_sigint_and_prints_the_ledger(tmp_path: Path) -> None:
    config = tmp_path / "runner.toml"
    argv = [
        sys.executable,
        "-c",
        _CLI,
        "--listen",
        "127.0.0.1:0",
        "--instances",
        "a,b",
        "--rate",
        "50",
        "--write-config",
        str(config),
        "--capacity",
        "2",
        "--summary-interval",
        "0.2",
        "--registration-tokens",
        str(tmp_path / "reg"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    assert proc.stdout is not None
    out = b""
    try:
        with trio.fail_after(30):
            while b"ledger: " not in out:
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, out.decode()
                out += chunk
            # The registration token it wrote is the one its Register accepts.
            url = re.search(rb"a: (http://127\.0\.0\.1:\d+\S*)", out)
            assert url is not None, out.decode()
            token_file = tmp_path / "reg" / "a.token"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            reg = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "scheduler",
                    "register",
                    "--config",
                    str(tmp_path / "registered.toml"),
                    "--connection",
                    "a",
                    "--url",
                    url.group(1).decode(),
                    "--token-file",
                    str(token_file),
                    "--labels",
                    "sim:host",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
                cwd=ROOT,
            )
            assert reg.returncode == 0, reg.stderr.decode()
            assert b"registered runner" in reg.stdout
            assert token_file.read_bytes().strip() not in reg.stdout + reg.stderr
            proc.send_signal(signal.SIGINT)
            while chunk := await proc.stdout.receive_some(65536):
                out += chunk
            assert await proc.wait() == 0, out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert "a: http://127.0.0.1:" in text and "b: http://127.0.0.1:" in text
    assert "received SIGINT" in text
    final = json.loads(text[text.index("{") :])
    assert final["ledger"]["assigned"] == 0 and set(final["ledger"]["instances"]) == {"a", "b"}
    assert final["instances"]["a"]["jobs"] > 0  # --rate 50 queued some while it ran
    parsed = tomllib.loads(config.read_text())
    assert parsed["runner"]["capacity"] == 2
    assert parsed["runner"]["state_dir"] == str(tmp_path / "state")
