"""``forgejo-scheduler register`` against the simulator over real HTTP on loopback:
the runner token lands in a 0600 file, the config keeps every byte the operator wrote
outside the new table, passes check-config, and the service then fetches with it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import trio

from scheduler.config import load_config
from scheduler.errors import OnboardError
from scheduler.onboard.register import RegisterArgs, register
from scheduler.sim import Simulator
from tests.support.daemon import CLI, ROOT
from tests.support.harness import plain_http_client, running_service
from tests.support.polling import wait_for
from tests.support.sim import running_sim

EXAMPLE = (ROOT / "config.toml").read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def no_metrics(config: Path) -> None:
    """No metrics server: the default port 9464 may be taken on a test machine."""
    with config.open("a") as fh:
        fh.write('\n[metrics]\nlisten = ""\n')


def temp_files(root: Path) -> list[Path]:
    return list(root.glob("**/.*.tmp"))


def registration_token(sim: Simulator, tmp_path: Path, name: str = "a") -> Path:
    path = tmp_path / f"{name}.registration-token"
    path.write_text(sim.instances[name].registration_token + "\n")
    path.chmod(0o600)
    return path


def args(sim: Simulator, tmp_path: Path, config: Path, **kw: object) -> RegisterArgs:
    base: dict[str, object] = {
        "config": config, "connection": "sim", "url": sim.base_url("a"),
        "token_file": str(registration_token(sim, tmp_path)), "labels": ("sim:host",),
        "name": "ci-runner-1",
    }
    return RegisterArgs(**{**base, **kw})  # type: ignore[arg-type]


async def test_register_appends_table_and_keeps_every_other_byte(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE)
    config.chmod(0o640)
    async with running_sim("a") as sim:
        done = await register(args(sim, tmp_path, config))
        inst = sim.instances["a"]
        runner = inst.runners[done.uuid]
        assert runner.name == "ci-runner-1" and runner.labels == ["sim"]
        assert inst.rpc_counts.get("Register") == 1 and "Declare" not in inst.rpc_counts

    text = config.read_text()
    assert text.startswith(EXAMPLE)  # the operator's file, byte for byte
    added = text[len(EXAMPLE):]
    assert "[connections.sim]" in added and f'uuid = "{done.uuid}"' in added
    assert 'token_file = "state/tokens/sim.token"' in added
    assert runner.token not in text and inst.registration_token not in text
    assert mode(config) == 0o640  # the file's mode is kept
    token_file = tmp_path / "state" / "tokens" / "sim.token"
    assert done.token_file == token_file
    assert token_file.read_text().strip() == runner.token
    assert mode(token_file) == 0o600 and mode(token_file.parent) == 0o700
    assert not temp_files(tmp_path)

    env = {"FORGEJO_TOKEN_CODEBERG": "c" * 40, "FORGEJO_TOKEN_INTERNAL": "d" * 40}
    loaded = {c.name: c for c in load_config(config, env=env).connections}
    assert loaded["sim"].token == runner.token and loaded["sim"].uuid == done.uuid
    assert loaded["sim"].labels == ("sim:host",)


async def test_new_config_then_the_service_fetches_as_the_new_runner(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    async with running_sim("a") as sim:
        done = await register(args(sim, tmp_path, config))
        assert done.created_config
        loaded = load_config(config, env={})
        assert [c.name for c in loaded.connections] == ["sim"]
        assert loaded.runner.capacity == 1 and loaded.runner.state_dir == config.parent / "state"
        job = sim.instances["a"].add_job(runs_on=("sim",), duration=0.1)
        no_metrics(config)
        async with running_service(config, client_factory=plain_http_client):
            inst = sim.instances["a"]
            await wait_for(lambda: (t := inst.task_for_job(job)) is not None and t.done,
                           within=30)
        task = sim.instances["a"].task_for_job(job)
        assert task is not None and task.runner_uuid == done.uuid
        assert sim.instances["a"].rpc_counts.get("Declare", 0) >= 1


async def test_existing_connection_needs_force(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE)
    async with running_sim("a") as sim:
        with pytest.raises(OnboardError) as err:
            await register(args(sim, tmp_path, config, connection="internal"))
        message = str(err.value)
        assert "connections.internal already exists" in message and "--force" in message
        assert "https://forgejo.internal.example" in message
        assert f"not {sim.base_url('a')}" in message
        assert config.read_text() == EXAMPLE
        assert "Register" not in sim.instances["a"].rpc_counts

        done = await register(args(sim, tmp_path, config, connection="internal", force=True))
        assert done.replaced == "0b7e2d4c-91a6-4f3e-8d5c-7a2b1c0d9e8f"
    text = config.read_text()
    head = EXAMPLE[:EXAMPLE.index("[connections.internal]")]
    assert text.startswith(head)  # everything before the changed table is untouched
    table = text[len(head):]
    # Updated in place: the comments stay, token_env became token_file on its line.
    assert table.splitlines()[:5] == [
        "[connections.internal]",
        "# A second instance on the company network: all defaults except what is set here.",
        f'url = "{sim.base_url("a")}"',
        f'uuid = "{done.uuid}"',
        'token_file = "state/tokens/internal.token"',
    ]
    assert "token_env" not in table and "(runner.fetch_interval), ca_file and insecure" in table


async def test_refused_registration_token_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE)
    bad = tmp_path / "wrong-token"
    bad.write_text("0123456789abcdef0123456789abcdef01234567\n")
    async with running_sim("a") as sim:
        with pytest.raises(OnboardError) as err:
            await register(args(sim, tmp_path, config, token_file=str(bad)))
    message = str(err.value)
    assert "refused the registration token" in message and str(bad) in message
    assert "0123456789abcdef" not in message
    assert config.read_text() == EXAMPLE and not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"token_file": "/nonexistent/reg-token"},
         "registration token file /nonexistent/reg-token does not exist"),
        ({"url": "ftp://forgejo.example"},
         "connections.sim.url: expected an http:// or https:// URL"),
        ({"labels": None, "config_text": "[runner]\ncapacity = 1\n"},
         "connections.sim.labels: no labels"),
        ({"connection": "bad name"}, "--connection 'bad name': expected 1-64"),
        ({"config_text": "[runner\n"}, "invalid TOML"),
        ({"labels": ("a:host", "a:docker://x")}, "duplicate label name 'a'"),
    ],
)
async def test_local_problems_are_found_before_the_server_is_asked(
    tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    config = tmp_path / "config.toml"
    text = str(change.pop("config_text", EXAMPLE))
    config.write_text(text)
    async with running_sim("a") as sim:
        with pytest.raises(OnboardError) as err:
            await register(args(sim, tmp_path, config, **change))
        assert "Register" not in sim.instances["a"].rpc_counts
    assert expected in str(err.value)
    assert config.read_text() == text


async def test_empty_registration_token_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    async with running_sim("a") as sim:
        expected = re.escape(f"registration token file {empty} is empty")
        with pytest.raises(OnboardError, match=expected):
            await register(args(sim, tmp_path, tmp_path / "c.toml", token_file=str(empty)))


async def test_wrong_path_is_no_runner_api(tmp_path: Path) -> None:
    async with running_sim("a") as sim:
        url = sim.base_url("a") + "/not-forgejo"
        with pytest.raises(OnboardError, match="no runner API at this URL") as err:
            await register(args(sim, tmp_path, tmp_path / "c.toml", url=url))
    assert url in str(err.value)
    assert not (tmp_path / "c.toml").exists()


async def test_unreachable_server(tmp_path: Path) -> None:
    async with running_sim("a") as sim:
        a = args(sim, tmp_path, tmp_path / "c.toml", url="http://127.0.0.1:9", timeout=5.0)
    expected = re.escape("http://127.0.0.1:9: Register: no usable answer")
    with pytest.raises(OnboardError, match=expected):
        await register(a)


async def test_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("# mine\n[runner]\ncapacity = 2\nlabels = [\"sim:host\"]\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    async with running_sim("a") as sim:
        await register(args(sim, tmp_path, link, labels=None))
    assert link.is_symlink() and "[connections.sim]" in real.read_text()
    assert real.read_text().startswith("# mine\n[runner]\ncapacity = 2\n")
    assert "labels" not in real.read_text().split("[connections.sim]")[1]  # inherited


async def test_cli_register_then_check_config(tmp_path: Path) -> None:
    """The real command as a process: nothing secret on its output, and check-config
    accepts the result."""
    config = tmp_path / "config.toml"
    async with running_sim("a") as sim:
        reg = registration_token(sim, tmp_path)
        argv = [*CLI, "register", "--config", str(config), "--connection", "sim",
                "--url", sim.base_url("a"), "--token-file", str(reg),
                "--labels", "sim:host, debian:host", "--name", "ci-1"]
        proc = await trio.run_process(argv, cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)
        out = proc.stdout.decode() + proc.stderr.decode()
        assert proc.returncode == 0, out
        (runner,) = [r for r in sim.instances["a"].runners.values() if r.name == "ci-1"]
        assert runner.labels == ["sim", "debian"]
        for secret in (runner.token, sim.instances["a"].registration_token):
            assert secret not in out and secret not in config.read_text()
        assert "mode 0600" in proc.stdout.decode() and runner.uuid in proc.stdout.decode()

        again = await trio.run_process(argv, cwd=ROOT, capture_stdout=True,
                                       capture_stderr=True, check=False)
        assert again.returncode == 2 and b"already exists" in again.stderr

    check = await trio.run_process([*CLI, "check-config", "--config", str(config)], cwd=ROOT,
                                   capture_stdout=True, capture_stderr=True, check=False)
    assert check.returncode == 0, check.stderr.decode()
    assert b"[connections.sim]" in check.stdout and runner.token.encode() not in check.stdout
    assert check.stderr == b""  # no warning: the token file is private


# --- issue 14: a shared state_dir, labels that cannot run ---------------------------------


def shared_config(tmp_path: Path, name: str) -> Path:
    """A config in its own directory whose state_dir is the one shared ``tmp_path/state``."""
    config = tmp_path / name / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[runner]\ncapacity = 1\nstate_dir = "{tmp_path / "state"}"\n')
    return config


async def test_register_refuses_another_configs_token_file_in_a_shared_state_dir(
    tmp_path: Path,
) -> None:
    first, second = shared_config(tmp_path, "one"), shared_config(tmp_path, "two")
    token_file = tmp_path / "state" / "tokens" / "sim.token"
    async with running_sim("a") as sim:
        done = await register(args(sim, tmp_path, first))
        assert done.token_file == token_file
        before = token_file.read_text()
        second_before = second.read_text()
        for force in (False, True):  # --force does not make another config's file ours
            with pytest.raises(OnboardError) as err:
                await register(args(sim, tmp_path, second, force=force))
            message = str(err.value)
            assert f"token file {token_file} already exists" in message
            assert f"[connections.sim] in {second}" in message
            assert "nothing was registered" in message
        assert sim.instances["a"].rpc_counts.get("Register") == 1  # nothing was sent
        assert token_file.read_text() == before and second.read_text() == second_before
        # Under another name it works, beside the first one's file.
        other = await register(args(sim, tmp_path, second, connection="sim2"))
        assert other.token_file == tmp_path / "state" / "tokens" / "sim2.token"
        # The first config re-registering its own connection may replace its own file.
        again = await register(args(sim, tmp_path, first, force=True))
    assert again.replaced == done.uuid
    assert token_file.read_text().strip() == sim.instances["a"].runners[again.uuid].token


async def test_register_declares_only_labels_that_can_run(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    async with running_sim("a") as sim:
        labels = ("sim:host", "ubuntu-latest:docker://node:20")
        done = await register(args(sim, tmp_path, config, labels=labels))
        assert sim.instances["a"].runners[done.uuid].labels == ["sim"]
        with pytest.raises(OnboardError) as err:
            await register(args(sim, tmp_path, config, connection="d",
                                labels=("ubuntu-latest:docker://node:20",)))
    assert "connections.d.labels: no label of connection d can run here" in str(err.value)
    assert "(nothing was registered)" in str(err.value)
    # Kept in the file, for when a container executor exists.
    assert load_config(config, env={}).connections[0].labels == labels


def test_register_cli_says_which_labels_are_not_declared(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"

    async def main() -> tuple[str, int]:
        async with running_sim("a") as sim:
            token = registration_token(sim, tmp_path)
            proc = await trio.run_process(
                [*CLI, "register", "--config", str(config), "--connection", "sim",
                 "--url", sim.base_url("a"), "--token-file", str(token),
                 "--labels", "sim:host,big:docker://node:20"],
                cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
            )
            return proc.stdout.decode() + proc.stderr.decode(), proc.returncode

    out, code = trio.run(main)
    assert code == 0, out
    assert ("declared to Forgejo: sim; kept in the config but not declared: "
            "big:docker://node:20 (docker: needs a container executor") in out
