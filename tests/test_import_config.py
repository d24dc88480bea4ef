"""``forgejo-scheduler import-config``: forgejo-runner's config.yml / .runner into our
config.toml. Fixtures in tests/data/forgejo-runner follow forgejo-runner's example
config; the last test imports a .runner of a simulated Forgejo and runs the service
with the result."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.errors import OnboardError
from scheduler.onboard.forgejo_runner import go_duration
from scheduler.onboard.import_config import import_config
from tests.support.config import no_metrics
from tests.support.daemon import CLI, ROOT
from tests.support.harness import plain_http_client, running_service
from tests.support.polling import wait_for
from tests.support.sim import running_sim

DATA = ROOT / "tests" / "data" / "forgejo-runner"
RUNNER_TOKEN = json.loads((DATA / ".runner").read_text())["token"]
INLINE_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fixture(tmp_path: Path, *names: str) -> Path:
    for name in names:
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path / names[0]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_cli_imports_config_and_runner_file(tmp_path: Path) -> None:
    config_yml = fixture(tmp_path, "config.yml", ".runner")
    out = tmp_path / "new" / "config.toml"
    out.parent.mkdir()
    proc = cli("import-config", str(config_yml), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr
    assert RUNNER_TOKEN not in shown and "a-cache-secret" not in shown
    text = out.read_text()
    assert RUNNER_TOKEN not in text and "a-cache-secret" not in text

    token_file = out.parent / "state" / "tokens" / "build-host-1.token"
    assert token_file.read_text().strip() == RUNNER_TOKEN
    assert mode(token_file) == 0o600 and mode(token_file.parent) == 0o700
    assert f"runner token: {token_file} (mode 0600)" in proc.stdout

    # One line per key that has no counterpart, values never shown.
    dropped = [line for line in proc.stdout.splitlines() if line.startswith("not carried")]
    keys = [line.split(": ")[1] for line in dropped]
    assert keys == ["log.level", "log.job_level", "cache.enabled", "cache.port", "cache.secret",
                    "cache.proxy_port", "container.enable_ipv6", "container.privileged",
                    "container.docker_host", "container.force_pull", "container.force_rebuild",
                    "runner.env_file"]  # .env is not there: forgejo-runner skips it too
    assert "cache.dir" in proc.stdout  # listed among the empty ones

    config = load_config(out, env={})
    assert config.runner.capacity == 3
    assert config.runner.fetch_interval == 5 and config.runner.shutdown_timeout == 5400
    (conn,) = config.connections
    assert conn.name == "build-host-1" and conn.url == "https://forgejo.example.org"
    assert conn.uuid == "c9e50be9-a7c3-4aee-ba35-624c4ff8c519" and conn.token == RUNNER_TOKEN
    assert conn.labels == ("debian:host", "bookworm:host")  # runner.labels is empty
    assert "#   runner.env_file: " in text  # the report is in the file too
    # runner.timeout and runner.envs are carried (issue 14).
    assert config.runner.job_timeout == 3 * 3600 and conn.job_timeout == 3 * 3600
    assert config.runner.envs == {"A_TEST_ENV_NAME_1": "a_test_env_value_1"}
    assert conn.job_env == {"A_TEST_ENV_NAME_1": "a_test_env_value_1"}
    assert "runner.timeout (as job_timeout)" in proc.stdout and "runner.envs" in proc.stdout

    check = cli("check-config", "--config", str(out))
    assert check.returncode == 0 and check.stderr == "", check.stderr
    assert RUNNER_TOKEN not in check.stdout


def test_server_connections(tmp_path: Path) -> None:
    config_yml = fixture(tmp_path, "connections.yml")
    (tmp_path / "codeberg.token").write_text("fedcba9876543210fedcba9876543210fedcba98\n")
    (tmp_path / "codeberg.token").chmod(0o600)
    out = tmp_path / "config.toml"
    done = import_config(config_yml, None, out)
    assert INLINE_TOKEN not in out.read_text()
    assert done.token_files == (tmp_path / "state" / "tokens" / "example.token",)
    assert "runner.report_retry: no setting" in done.source.dropped[1]
    assert any("raised to 30s for Codeberg" in n for n in done.source.notes)

    config = load_config(out, env={})
    r = config.runner
    assert (r.capacity, r.fetch_interval, r.fetch_timeout, r.report_interval) == (6, 2, 10, 0.5)
    assert r.labels == ("debian:host",)
    by_name = {c.name: c for c in config.connections}
    example, codeberg = by_name["example"], by_name["codeberg"]
    assert example.token == INLINE_TOKEN and example.fetch_interval == 8
    assert example.labels == ("debian:host",)  # inherited from runner.labels
    assert codeberg.token_source == f"file:{tmp_path / 'codeberg.token'}"  # referenced
    assert codeberg.fetch_interval == 30 and codeberg.labels == ("trixie:host", "debian:host")


def test_existing_output_needs_force(tmp_path: Path) -> None:
    config_yml = fixture(tmp_path, "config.yml", ".runner")
    out = tmp_path / "config.toml"
    out.write_text("# mine\n")
    out.chmod(0o640)
    with pytest.raises(OnboardError, match="exists; pass --force"):
        import_config(config_yml, None, out)
    assert out.read_text() == "# mine\n" and not (tmp_path / "state").exists()
    import_config(config_yml, None, out, force=True)
    assert "[connections.build-host-1]" in out.read_text() and mode(out) == 0o640


def test_runner_file_alone_with_a_name(tmp_path: Path) -> None:
    runner_file = fixture(tmp_path, ".runner")
    out = tmp_path / "config.toml"
    done = import_config(None, runner_file, out, connection="forgejo")
    assert [c.name for c in done.source.connections] == ["forgejo"]
    assert load_config(out, env={}).connections[0].token == RUNNER_TOKEN


def test_runner_file_and_server_connections_exclude_each_other(tmp_path: Path) -> None:
    config_yml = fixture(tmp_path, "connections.yml", ".runner")
    with pytest.raises(OnboardError, match="forgejo-runner refuses this combination"):
        import_config(config_yml, tmp_path / ".runner", tmp_path / "config.toml")


def write_yml(tmp_path: Path, connection: str, runner: str = "capacity: 1") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(f"runner:\n  {runner}\n  labels: [debian:host]\nserver:\n  connections:\n"
                    f"    one:\n{connection}")
    return path


GOOD = ("      url: https://forgejo.example\n"
        "      uuid: 7f7695df-a064-4c70-a597-56714e851e2c\n"
        f"      token: {INLINE_TOKEN}\n")


@pytest.mark.parametrize(
    ("connection", "runner", "expected"),
    [
        (GOOD.replace("      uuid: 7f7695df-a064-4c70-a597-56714e851e2c\n", ""), "capacity: 1",
         "server.connections.one.uuid: missing"),
        (GOOD + "      token_url: file:/x\n", "capacity: 1",
         "server.connections.one: expected exactly one of token and token_url"),
        (GOOD, "fetch_interval: 5", "runner.fetch_interval: expected a Go duration string"),
        (GOOD, "fetch_timeout: 5 s", "runner.fetch_timeout: '5 s' is not a Go duration"),
        (GOOD.replace(f"token: {INLINE_TOKEN}", "token_url: https://vault/x"), "capacity: 1",
         "server.connections.one.token_url: only file: URLs"),
        (GOOD.replace(f"token: {INLINE_TOKEN}", "token_url: file:$CREDENTIALS_DIRECTORY/t"),
         "capacity: 1", "uses $CREDENTIALS_DIRECTORY (systemd credentials), which is not set"),
        (GOOD, "capacity: 5000", "runner.capacity: expected at most 1000"),
        (GOOD.replace("https://forgejo.example", "ftp://forgejo.example"), "capacity: 1",
         "connections.one.url: expected an http:// or https:// URL"),
    ],
)
def test_errors_name_the_key_and_nothing_is_written(
    tmp_path: Path, connection: str, runner: str, expected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write_yml(tmp_path, connection, runner)
    with pytest.raises(OnboardError) as err:
        import_config(path, None, tmp_path / "config.toml")
    assert expected in str(err.value)
    assert INLINE_TOKEN not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yml"]  # nothing written


def test_credentials_directory_is_expanded_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "t").write_text(INLINE_TOKEN)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write_yml(tmp_path, GOOD.replace(f"token: {INLINE_TOKEN}",
                                            "token_url: file:$CREDENTIALS_DIRECTORY/t"))
    import_config(path, None, tmp_path / "config.toml")
    data = tomllib.loads((tmp_path / "config.toml").read_text())
    assert data["connections"]["one"]["token_file"] == str(creds / "t")


# --- job settings and labels (issue 14) ---------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "expected", "note"),
    [("90m", 5400.0, None), ("0s", 3 * 3600.0, "means 3h in forgejo-runner"),
     ("-5m", 3 * 3600.0, "means 3h in forgejo-runner")],
)
def test_runner_timeout_becomes_job_timeout(
    tmp_path: Path, timeout: str, expected: float, note: str | None
) -> None:
    path = write_yml(tmp_path, GOOD, f"timeout: {timeout}")
    done = import_config(path, None, tmp_path / "config.toml")
    config = load_config(tmp_path / "config.toml", env={})
    assert config.runner.job_timeout == expected == config.connections[0].job_timeout
    assert ("runner.timeout (as job_timeout)" in done.carried) is (note is None)
    assert note is None or any(note in n for n in done.source.notes)
    assert not any("timeout" in d for d in done.source.dropped)


def test_runner_envs_and_env_file_are_carried_with_forgejo_runners_precedence(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs.env").write_text("# from the file\nSHARED=file\nexport ONLY_FILE='x y'\n")
    runner = ("envs:\n    SHARED: inline\n    ONLY_ENVS: 3\n    FLAG: true\n"
              "    bad-name: x\n  env_file: jobs.env")
    path = write_yml(tmp_path, GOOD, runner)
    done = import_config(path, None, tmp_path / "config.toml")
    data = tomllib.loads((tmp_path / "config.toml").read_text())
    # yaml.v3 puts scalars into Go strings as written; a name no shell takes is dropped.
    assert data["runner"]["envs"] == {"SHARED": "inline", "ONLY_ENVS": "3", "FLAG": "true"}
    assert data["runner"]["env_file"] == str(tmp_path / "jobs.env")  # relative to config.yml
    dropped = done.source.dropped
    assert any(d.startswith("runner.envs.bad-name: not a variable name") for d in dropped)
    assert {"runner.envs", "runner.env_file"} <= set(done.carried)
    (conn,) = load_config(tmp_path / "config.toml", env={}).connections
    # forgejo-runner: the env file's values over envs (config.go maps.Copy).
    assert conn.job_env == {"SHARED": "file", "ONLY_ENVS": "3", "FLAG": "true", "ONLY_FILE": "x y"}


def test_output_directory_is_created_0700(tmp_path: Path) -> None:
    config_yml = fixture(tmp_path, "config.yml", ".runner")
    out = tmp_path / "etc" / "forgejo-scheduler" / "config.toml"
    proc = cli("import-config", str(config_yml), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    for directory in (tmp_path / "etc", out.parent):
        assert mode(directory) == 0o700
        assert f"created directory {directory} (mode 0700)" in proc.stdout
    assert load_config(out, env={}).connections[0].name == "build-host-1"


def test_a_refused_import_creates_no_directory(tmp_path: Path) -> None:
    # The directory is only created once everything was checked.
    bad = write_yml(tmp_path, GOOD, "capacity: 5000")
    with pytest.raises(OnboardError, match="nothing was written"):
        import_config(bad, None, tmp_path / "deep" / "er" / "config.toml")
    assert not (tmp_path / "deep").exists()


def test_labels_that_cannot_run_are_kept_but_reported(tmp_path: Path) -> None:
    connection = GOOD + "      labels: [ubuntu-latest:docker://node:20, debian:host, big]\n"
    path = write_yml(tmp_path, connection)
    proc = cli("import-config", str(path), "--output", str(tmp_path / "config.toml"))
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if "not declared to Forgejo" in x]
    assert line.startswith("labels kept in the file but not declared to Forgejo: "
                           "connections.one: ubuntu-latest:docker://node:20 (docker: needs a "
                           "container executor")
    assert "big (no scheme, which means docker: needs a container executor" in line
    (conn,) = load_config(tmp_path / "config.toml", env={}).connections
    assert conn.labels == ("ubuntu-latest:docker://node:20", "debian:host", "big")


def test_a_connection_with_only_container_labels_is_refused(tmp_path: Path) -> None:
    path = write_yml(tmp_path, GOOD + "      labels: [ubuntu-latest:docker://node:20]\n")
    with pytest.raises(OnboardError) as err:
        import_config(path, None, tmp_path / "config.toml")
    message = str(err.value)
    assert "connections.one.labels: no label of connection one can run here" in message
    assert "ubuntu-latest:docker://node:20 (docker: needs a container executor" in message
    assert "nothing was written" in message and not (tmp_path / "config.toml").exists()


def test_go_durations() -> None:
    assert go_duration("1h30m", "k") == 5400
    assert go_duration("1.5s", "k") == 1.5
    assert go_duration("500ms", "k") == 0.5
    assert go_duration("2m0s", "k") == 120
    assert go_duration("0", "k") == 0
    assert go_duration("100us", "k") == pytest.approx(1e-4)
    for bad in ("5", "", "1d", "s", "1h 2m"):
        with pytest.raises(OnboardError, match="k: "):
            go_duration(bad, "k")
    with pytest.raises(OnboardError, match="expected a Go duration string"):
        go_duration(5, "k")


async def test_imported_runner_file_fetches_from_the_simulator(tmp_path: Path) -> None:
    """A forgejo-runner registration moves over: the service fetches as that runner."""
    async with running_sim("a") as sim:
        inst = sim.instances["a"]
        runner_file = tmp_path / ".runner"
        runner_file.write_text(json.dumps({
            "WARNING": "generated", "id": inst.runner.id, "uuid": inst.runner.uuid,
            "name": "old-runner", "token": inst.runner.token, "address": sim.base_url("a"),
            "labels": ["sim:host"],
        }))
        out = tmp_path / "config.toml"
        import_config(None, runner_file, out)
        job = inst.add_job(runs_on=("sim",), duration=0.1)
        no_metrics(out)
        async with running_service(out, client_factory=plain_http_client):
            await wait_for(lambda: (t := inst.task_for_job(job)) is not None and t.done,
                           within=30)
        task = inst.task_for_job(job)
        assert task is not None and task.runner_uuid == inst.runner.uuid
