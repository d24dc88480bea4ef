"""The deployment examples: examples/ (Docker Compose) and deploy/kubernetes/.

Schema checks with real validators: the Compose files against the Compose
Specification's JSON schema (tests/data/compose-spec.json, vendored from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6, Apache-2.0), the Kubernetes manifests
with kubernetes-validate (the API's OpenAPI schemas, strict: unknown fields are
errors). Then the cross-file facts a schema cannot see: every config shipped passes
our own config loader, the ports, paths, probes and grace periods agree with it,
and every host path mounted exists.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import kubernetes_validate
import pytest
import yaml

from scheduler.config import Config, RunnerSettings, parse_config
from scheduler.durations import parse_duration
from scheduler.sim.cli import add_arguments as sim_arguments
from scheduler.task.lifecycle import SHUTDOWN_REPORT_TIMEOUT
from tests.support.sim import running_sim

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE_FILES = ["compose.yaml", "compose.sim.yaml"]
#: The oldest Kubernetes minor still commonly supported, and the newest schemas we have.
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(EXAMPLES / name)
    return data


def with_token_file(text: str, source: Path, tmp_path: Path) -> Config:
    """Parse a shipped config as the service would, its token_file(s) replaced by a
    private file in tmp_path (the real one is a mounted secret)."""
    data = tomllib.loads(text)
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef01234567\n")
    token.chmod(0o600)
    for conn in data["connections"].values():
        assert "token_file" in conn and "token" not in conn and "token_env" not in conn
        conn["token_file"] = str(token)
    return parse_config(data, source=source, env={})


def compose_seconds(text: str) -> float:
    """A Compose duration ("5m30s", "40s")."""
    return parse_duration(text, where="compose")


def outwaits_the_drain(grace: float, runner: RunnerSettings) -> bool:
    """The engine's stop timeout covers the longest stop (scheduler.service): running
    tasks for shutdown_timeout, then the final reports of the tasks it cancels for
    shutdown_report_timeout (all of it when Forgejo does not answer), or the unresolved
    keys' shutdown_resolve_timeout if that is longer, plus a margin: the podman-compose
    check of compose.sim.yaml ran into this."""
    longest = max(runner.shutdown_resolve_timeout,
                  runner.shutdown_timeout + runner.shutdown_report_timeout)
    return grace >= longest + 5


def test_outwaits_the_drain_counts_every_bound() -> None:
    runner = RunnerSettings(capacity=1, state_dir=Path("state"), shutdown_timeout=300)
    assert outwaits_the_drain(335, runner) and not outwaits_the_drain(334, runner)
    slow_reports = attrs.evolve(runner, shutdown_report_timeout=SHUTDOWN_REPORT_TIMEOUT + 60)
    assert not outwaits_the_drain(335, slow_reports)
    long_keys = attrs.evolve(runner, shutdown_resolve_timeout=600)
    assert not outwaits_the_drain(335, long_keys) and outwaits_the_drain(605, long_keys)


def listen_port(config: Config) -> int:
    assert config.metrics.enabled
    assert config.metrics.host == "0.0.0.0", "in a container, listen on all addresses"
    return config.metrics.port


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of a service's short-syntax volumes."""
    out = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), "short syntax only, for these checks"
        source, target, *mode = entry.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


# ----------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose_schema() -> jsonschema.Draft7Validator:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_spec(
    name: str, compose_schema: jsonschema.Draft7Validator
) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in compose_schema.iter_errors(compose(name))
    ]
    assert errors == []


def test_the_compose_schema_rejects_a_typo(compose_schema: jsonschema.Draft7Validator) -> None:
    data = compose("compose.yaml")
    data["services"]["scheduler"]["stop_grace_perod"] = "1m"
    assert not compose_schema.is_valid(data)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_host_paths_exist(name: str) -> None:
    data = compose(name)
    ignored = (EXAMPLES / ".gitignore").read_text().split()
    for service in data["services"].values():
        if "build" in service:
            context = (EXAMPLES / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()
            assert service["image"] == "forgejo-scheduler:latest"
        else:  # third-party images are pinned
            _repo, _, tag = service["image"].partition(":")
            assert tag and tag != "latest", service["image"]
        for source, _target, _mode in mounts(service):
            if source.startswith("."):
                assert (EXAMPLES / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in data["volumes"], f"{name}: unknown volume {source}"
    for secret in data.get("secrets", {}).values():
        # Created by the user, never committed.
        assert any(fnmatch.fnmatch(Path(secret["file"]).name, p) for p in ignored)


def test_monitoring_services_are_the_same_in_both_files() -> None:
    a, b = compose("compose.yaml"), compose("compose.sim.yaml")
    for name in ("prometheus", "grafana"):
        assert a["services"][name] == b["services"][name]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_prometheus_and_grafana_wiring(name: str) -> None:
    services = compose(name)["services"]
    prom = {target: source for source, target, _ in mounts(services["prometheus"])}
    scrape = load_yaml(EXAMPLES / prom["/etc/prometheus/prometheus.yml"].removeprefix("./"))
    (job,) = scrape["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    assert target.split(":")[0] == "scheduler" and "scheduler" in services
    # The rules glob points into the mounted rules directory.
    (rules,) = scrape["rule_files"]
    rules_dir = next(t for t in prom if t.rstrip("/") == str(Path(rules).parent))
    assert prom[rules_dir].rstrip("/").endswith("prometheus/rules")
    grafana = services["grafana"]
    gmounts = {target.rstrip("/"): source for source, target, _ in mounts(grafana)}
    assert gmounts["/etc/grafana/provisioning"].rstrip("/").endswith("grafana/provisioning")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path("/var/lib/grafana/dashboards")
    assert gmounts[home].endswith("grafana/dashboard.json")
    for service in (services["grafana"], services["prometheus"]):
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), "published on this host only"


def test_compose_scheduler_matches_its_config(tmp_path: Path) -> None:
    service = compose("compose.yaml")["services"]["scheduler"]
    by_target = {target: (source, mode) for source, target, mode in mounts(service)}
    config_path = service["command"][service["command"].index("--config") + 1]
    source, mode = by_target[config_path]
    assert mode == "ro"
    config = with_token_file((EXAMPLES / source).read_text(), EXAMPLES / source, tmp_path)
    # The token is a compose secret, read through token_file.
    (secret,) = service["secrets"]
    original = tomllib.loads((EXAMPLES / source).read_text())
    (conn,) = original["connections"].values()
    assert conn["token_file"] == f"/run/secrets/{secret}"
    assert secret in compose("compose.yaml")["secrets"]
    # state_dir is the named volume.
    assert by_target[str(config.runner.state_dir)][0] in compose("compose.yaml")["volumes"]
    # Docker waits longer than the service's drain.
    assert outwaits_the_drain(compose_seconds(service["stop_grace_period"]), config.runner)
    port = listen_port(config)
    assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    scrape = load_yaml(EXAMPLES / "prometheus.yml")
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"scheduler:{port}"]


def test_compose_sim_wiring() -> None:
    data = compose("compose.sim.yaml")
    forgejo, scheduler = data["services"]["forgejo"], data["services"]["scheduler"]
    # entrypoint: tini -- sh -c '... exec forgejo-scheduler sim "$@"' sim, then command.
    entry = forgejo["entrypoint"]
    assert entry[:2] == ["tini", "--"] and "exec forgejo-scheduler sim" in entry[4]
    assert shlex.split(entry[4].replace("$$", "$"))[-1] == "$@"
    parser = argparse.ArgumentParser()
    sim_arguments(parser)
    args = parser.parse_args(forgejo["command"])
    # The sim listens on all addresses of its container; the runner reaches it by name.
    assert args.listen[0] == "0.0.0.0"
    assert args.advertise == ("forgejo", args.listen[1])
    # The config is written into the volume the scheduler reads it from.
    shared = {t: s for s, t, _ in mounts(forgejo)}
    theirs = {t: s for s, t, _ in mounts(scheduler)}
    volume_dir = next(t for t in shared if args.write_config.is_relative_to(t))
    assert theirs[volume_dir] == shared[volume_dir]
    assert args.state_dir.is_relative_to(volume_dir)
    assert forgejo["healthcheck"]["test"][-1] == str(args.write_config)
    assert scheduler["command"] == ["run", "--config", str(args.write_config)]
    assert scheduler["depends_on"]["forgejo"]["condition"] == "service_healthy"
    # Prometheus finds the metrics there, and Docker outwaits the drain.
    port = int(args.metrics_listen.rpartition(":")[2])
    assert args.metrics_listen.startswith("0.0.0.0:")
    assert scheduler["ports"] == [f"127.0.0.1:{port}:{port}"]
    # The config the sim writes has the default shutdown_resolve/report_timeout.
    runner = RunnerSettings(capacity=1, state_dir=Path("state"),
                            shutdown_timeout=compose_seconds(args.shutdown_timeout))
    assert outwaits_the_drain(compose_seconds(scheduler["stop_grace_period"]), runner)


async def test_compose_sim_config_would_load(tmp_path: Path) -> None:
    """What the sim writes with these arguments passes our loader (in tmp_path)."""
    args = argparse.ArgumentParser()
    sim_arguments(args)
    parsed = args.parse_args(compose("compose.sim.yaml")["services"]["forgejo"]["command"])
    async with running_sim(*parsed.instances) as sim:
        path = sim.write_runner_config(
            tmp_path / "config.toml",
            capacity=parsed.capacity,
            state_dir=tmp_path / "state",
            fetch_interval=parsed.fetch_interval,
            shutdown_timeout=parsed.shutdown_timeout,
            metrics_listen=parsed.metrics_listen,
            advertise=f"{parsed.advertise[0]}:{parsed.advertise[1]}",
        )
    config = parse_config(tomllib.loads(path.read_text()), source=path, env={})
    assert [c.url for c in config.connections] == [
        f"http://forgejo:3000/{name}" for name in parsed.instances
    ]
    assert listen_port(config) == 9464


# -------------------------------------------------------------------- kubernetes


def k8s_docs() -> dict[str, dict[str, Any]]:
    """Every manifest in deploy/kubernetes by kind (one document per file)."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        out[doc["kind"]] = doc | {"__file__": path.name}
    return out


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__file__"}


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return k8s_docs()


@pytest.fixture(scope="module")
def pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = k8s["StatefulSet"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c  # type: ignore[no-any-return]


@pytest.fixture
def k8s_config(k8s: dict[str, dict[str, Any]], tmp_path: Path) -> Config:
    text = k8s["ConfigMap"]["data"]["config.toml"]
    return with_token_file(text, K8S / "configmap.yaml", tmp_path)


CORE_KINDS = ["Namespace", "ConfigMap", "Secret", "Service", "StatefulSet"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", CORE_KINDS)
def test_manifest_matches_the_kubernetes_schema(
    kind: str, version: str, k8s: dict[str, dict[str, Any]]
) -> None:
    kubernetes_validate.validate(strip(k8s[kind]), version, strict=True)


def test_the_kubernetes_schema_rejects_a_typo(k8s: dict[str, dict[str, Any]]) -> None:
    bad = json.loads(json.dumps(strip(k8s["StatefulSet"])))
    context = bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFilesytem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kustomization(k8s: dict[str, dict[str, Any]]) -> None:
    kust = k8s["Kustomization"]
    resources = kust["resources"]
    assert all((K8S / r).is_file() for r in resources)
    # The placeholder token must never overwrite the real Secret; the ServiceMonitor
    # needs the Prometheus Operator's CRDs.
    assert k8s["Secret"]["__file__"] not in resources
    assert k8s["ServiceMonitor"]["__file__"] not in resources
    assert {k8s[k]["__file__"] for k in CORE_KINDS if k != "Secret"} == set(resources)
    assert kust["namespace"] == k8s["Namespace"]["metadata"]["name"]
    assert k8s["Secret"]["metadata"]["namespace"] == kust["namespace"]
    assert [i["name"] for i in kust["images"]] == [k8s_container_image(k8s)]


def k8s_container_image(k8s: dict[str, dict[str, Any]]) -> str:
    image: str = k8s["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["image"]
    return image.partition(":")[0]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert sorted(kinds) == ["ConfigMap", "Namespace", "Service", "StatefulSet"]
    for doc in yaml.safe_load_all(out):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_configmap_config_passes_check_config(k8s_config: Config) -> None:
    assert k8s_config.runner.state_dir == Path("/data")
    assert len(k8s_config.connections) >= 1


def test_one_replica_with_its_own_volume(
    k8s: dict[str, dict[str, Any]], container: dict[str, Any], k8s_config: Config
) -> None:
    sts = k8s["StatefulSet"]["spec"]
    assert sts["replicas"] == 1
    assert sts["podManagementPolicy"] == "OrderedReady"
    assert sts["serviceName"] == k8s["Service"]["metadata"]["name"]
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounted = {m["name"]: m for m in container["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]]["mountPath"] == str(k8s_config.runner.state_dir)


def test_security_context(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_writable_paths_are_volumes(
    pod: dict[str, Any], container: dict[str, Any], k8s_config: Config
) -> None:
    """Read-only root: /tmp and state_dir (where the jobs' work dirs are) are volumes."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {
        m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")
    }
    assert "emptyDir" in volumes[writable["/tmp"]]
    assert str(k8s_config.runner.state_dir) in writable  # the volumeClaimTemplate
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert any(Path(env.get("HOME", "/")).is_relative_to(p) for p in writable)


def test_config_and_token_are_mounted_files(
    k8s: dict[str, dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    args = container["args"]
    assert args[0] == "run" and "--watch-config" in args
    config_path = Path(args[args.index("--config") + 1])
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_path = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = by_path[str(config_path.parent)]
    assert config_mount["readOnly"] is True
    cm_volume = volumes[config_mount["name"]]["configMap"]
    assert cm_volume["name"] == k8s["ConfigMap"]["metadata"]["name"]
    assert config_path.name in k8s["ConfigMap"]["data"]
    # The token: a Secret volume, read through token_file (not an env variable).
    raw = tomllib.loads(k8s["ConfigMap"]["data"][config_path.name])
    for conn in raw["connections"].values():
        token_file = Path(conn["token_file"])
        mount = by_path[str(token_file.parent)]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == k8s["Secret"]["metadata"]["name"]
        assert token_file.name in k8s["Secret"]["stringData"]
    assert all("valueFrom" not in e for e in container.get("env", []))


def test_probes_and_ports_match_the_metrics_listen(
    k8s: dict[str, dict[str, Any]], container: dict[str, Any], k8s_config: Config
) -> None:
    port = listen_port(k8s_config)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz" and readiness["path"] == "/readyz"
    assert ports[liveness["port"]] == port and ports[readiness["port"]] == port
    service = k8s["Service"]
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == port and ports[sport["targetPort"]] == port
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    pod_labels = k8s["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == sport["name"]


def test_grace_period_outlasts_the_drain(pod: dict[str, Any], k8s_config: Config) -> None:
    assert outwaits_the_drain(pod["terminationGracePeriodSeconds"], k8s_config.runner)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """examples/prometheus.yml with its rules glob pointed at the repository's rules."""
    scrape = load_yaml(EXAMPLES / "prometheus.yml")
    (rules,) = scrape["rule_files"]
    scrape["rule_files"] = [str(ROOT / "prometheus" / "rules" / Path(rules).name)]
    assert list((ROOT / "prometheus" / "rules").glob(Path(rules).name))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(scrape))
    proc = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
