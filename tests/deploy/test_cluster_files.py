"""The cluster deploy files (deploy/cluster: docker compose, ClickHouse and Keeper, HAProxy,
Prometheus, Grafana; deploy/kubernetes) agree with the code and with each other: every
STREAMTALLY_* variable and every flag is a declared setting, values validate, secrets never
appear as literals or on a command line, the topology is 3 Keepers, 2 shards x 2 replicas,
2 aggregators, 3 collectors, HAProxy with TLS, and every metric a dashboard or an alert
reads is one the code exposes. No Docker engine or cluster runs here: checked statically,
HAProxy with ``haproxy -c``.

The cluster commands (``streamtally collect``/``aggregate``) and the link's settings and
metrics are written on another branch (issue 12). Until they are in the code they are
checked against :data:`CLUSTER_BRANCH` (the interface the issue fixes); once the code has
one, the test says to delete it from there, and from then on the real CLI checks it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

import aggregator.app  # registers the aggregator's metrics
import aggregator.cluster.link_server
import aggregator.purge  # noqa: F401
import collector.app
import collector.link  # noqa: F401  (registers the collector's link metrics)
from aggregator.cli import build_parser
from aggregator.config import AggregatorConfig
from aggregator.opmetrics import EXPOSURE
from aggregator.storage.cluster_schema import check_cluster_name
from collector import errors, settings
from collector.config import CollectorConfig
from collector.linkconfig import ClusterConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLUSTER = DEPLOY / "cluster"
K8S = DEPLOY / "kubernetes"
CONFIGS = (CollectorConfig, AggregatorConfig, ClusterConfig)
DECLARED = {f.name: f for cls in CONFIGS for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class ClusterBranch:
    """What issue 12's cluster code adds, used here before it is merged."""

    commands: dict[str, frozenset[str]]  # subcommand -> its required flags
    settings: frozenset[str]
    secret_settings: frozenset[str]
    metrics: frozenset[str]


CLUSTER_BRANCH = ClusterBranch(  # everything of it is in the code now (merged)
    commands={},
    settings=frozenset(),
    secret_settings=frozenset(),
    metrics=frozenset(),
)
SECRET_SETTINGS = {n for n, f in DECLARED.items() if f.metadata["secret"]} | set(
    CLUSTER_BRANCH.secret_settings
)


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices or ())


def test_the_cluster_branch_list_names_only_what_the_code_lacks() -> None:
    """Reconciling after the merge: each entry the code now has goes from CLUSTER_BRANCH."""
    assert not set(CLUSTER_BRANCH.commands) & subcommands(), "now in the CLI: remove"
    assert not CLUSTER_BRANCH.settings & set(DECLARED), "now declared settings: remove"
    assert not CLUSTER_BRANCH.metrics & set(code_metrics()), "now in the code: remove"


# ---- reading the files -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CLUSTER / "compose.yaml").read_text())
    return data


def services(kind: str) -> dict[str, dict[str, Any]]:
    """Compose services by role: keeper, clickhouse, aggregate, collect, haproxy."""
    out = {}
    for name, svc in compose()["services"].items():
        image = svc.get("image", "")
        command = svc.get("command") or []
        role = (
            "keeper" if "clickhouse-keeper" in image
            else "clickhouse" if "clickhouse-server" in image
            else "haproxy" if image.startswith("haproxy")
            else command[1] if command[:1] == ["streamtally"]
            else image.split(":")[0].split("/")[-1]
        )  # fmt: skip
        if role == kind:
            out[name] = svc
    return out


def k8s() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / "streamtally.yaml").read_text()) if d]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in k8s() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def k8s_secrets() -> dict[str, set[str]]:
    docs = yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    return {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d}


def flag_values(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            out[word] = argv[i + 1]
    return out


def setting_of(flag: str) -> str:
    return flag[2:].replace("-", "_")


# ---- commands and settings ---------------------------------------------------------------


def check_command(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """``argv`` runs with the real CLI (or the cluster branch's interface); its declared
    settings, from flags and environment, validate. Returns the flags."""
    assert argv[0] == "streamtally"
    command = argv[1]
    flags = flag_values(argv[2:])
    for flag in flags:
        assert setting_of(flag) not in SECRET_SETTINGS, f"{flag}: a secret on a command line"
    if command in subcommands():
        args = build_parser().parse_args(argv[1:])
        cli = vars(args)
    else:
        assert command in CLUSTER_BRANCH.commands, f"unknown command {command}"
        for flag in flags:
            name = setting_of(flag)
            assert name in DECLARED or name in CLUSTER_BRANCH.settings, flag
        missing = {
            f for f in CLUSTER_BRANCH.commands[command]
            if f not in flags and settings.env_name(setting_of(f)) not in env
        }  # fmt: skip
        assert not missing, f"{command} needs {sorted(missing)}"
        cli = {setting_of(f): v for f, v in flags.items() if setting_of(f) in DECLARED}
    declared_env = {k: v for k, v in env.items() if not v.startswith("${")}
    for cls in CONFIGS:
        settings.load(cls, cli, declared_env, {})
    return flags


def check_environment(env: dict[str, Any], where: str) -> dict[str, str]:
    """STREAMTALLY_* names are settings; secrets are never literal values."""
    literal = {}
    for key, value in env.items():
        if not key.startswith(settings.ENV_PREFIX):
            continue
        name = key[len(settings.ENV_PREFIX) :].lower()
        assert name in DECLARED or name in CLUSTER_BRANCH.settings, f"{where}: {key}"
        if isinstance(value, dict):  # Kubernetes valueFrom
            continue
        if name in SECRET_SETTINGS:
            assert "${" in str(value), f"{where}: {key} is a literal secret"
        literal[key] = str(value)
    return literal


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize(
    "role", ["aggregate", "collect"], ids=["aggregators", "collectors"]
)  # fmt: skip
def test_compose_commands_and_environment_are_settings(role: str) -> None:
    for name, svc in services(role).items():
        env = compose_env(svc)
        check_environment(env, name)
        check_command(svc["command"], env)


def k8s_containers() -> dict[str, tuple[list[str], dict[str, Any]]]:
    out = {}
    for doc in k8s():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
                out[doc["metadata"]["name"]] = (c["args"], env)
    return out


@pytest.mark.parametrize("workload", ["aggregator", "collector"])
def test_kubernetes_commands_and_environment_are_settings(workload: str) -> None:
    args, env = k8s_containers()[workload]
    literal = check_environment(env, workload)
    argv = [a.replace("$(POD_INDEX)", "0") for a in args]
    check_command(argv, literal)
    for name, value in env.items():
        setting = name[len(settings.ENV_PREFIX) :].lower()
        if setting in SECRET_SETTINGS:
            assert isinstance(value, dict), f"{name} must come from a Secret"
            assert set(value) == {"secretKeyRef"}


def test_secrets_are_set_for_every_secret_the_processes_need() -> None:
    aggregators = services("aggregate")
    for name, svc in aggregators.items():
        env = compose_env(svc)
        for needed in ("cluster_secret", "admin_token", "clickhouse_url"):
            assert settings.env_name(needed) in env, (name, needed)
    for svc in services("collect").values():
        assert settings.env_name("cluster_secret") in compose_env(svc)
    for workload, needed in (
        ("aggregator", ("cluster_secret", "admin_token", "clickhouse_url")),
        ("collector", ("cluster_secret",)),
    ):
        _, env = k8s_containers()[workload]
        for setting in needed:
            assert settings.env_name(setting) in env, (workload, setting)


def test_compose_secrets_come_from_the_env_file_only() -> None:
    text = (CLUSTER / "compose.yaml").read_text()
    variables = set(re.findall(r"\$\{(\w+)", text))
    example = {
        line.split("=")[0]
        for line in (CLUSTER / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert variables == example
    assert all(not line.split("=", 1)[1] for line in (CLUSTER / "env.example").read_text()
               .splitlines() if line and not line.startswith("#"))  # fmt: skip
    assert ".env" in (CLUSTER / ".gitignore").read_text().split()


# ---- topology ----------------------------------------------------------------------------


def shards_of(flags: list[dict[str, str]]) -> tuple[list[int], int]:
    parts = [f["--shard"].split("/") for f in flags]
    counts = {int(m) for _, m in parts}
    assert len(counts) == 1
    return sorted(int(i) for i, _ in parts), counts.pop()


def test_compose_runs_the_small_cluster_of_issue_12() -> None:
    assert len(services("keeper")) == 3
    assert len(services("clickhouse")) == 4
    assert len(services("collect")) == 3
    assert len(services("haproxy")) == 1
    aggregators = services("aggregate")
    flags = {n: flag_values(s["command"]) for n, s in aggregators.items()}
    indexes, count = shards_of(list(flags.values()))
    assert indexes == list(range(count)) == [0, 1]  # shard I of M, I from 0, each once
    links = {f"{n}:{f['--listen'].rsplit(':', 1)[1]}" for n, f in flags.items()}
    for name, svc in services("collect").items():
        assert set(flag_values(svc["command"])["--aggregators"].split(",")) == links, name


def test_compose_publishes_only_https_to_the_world() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            if name == "haproxy":
                assert port == "443:8443"
            else:
                assert port.startswith("127.0.0.1:"), (name, port)


def test_compose_files_it_mounts_exist() -> None:
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./certs/") or source == "./certs":
                continue  # made by the operator: certs/README.md
            if source.startswith("./"):
                assert (CLUSTER / source).exists(), (name, source)
        build = svc.get("build")
        if build:
            assert (CLUSTER / build["context"] / build["dockerfile"]).exists()
    certs = (CLUSTER / "certs" / "README.md").read_text()
    for svc in compose()["services"].values():
        for volume in svc.get("volumes", []):
            if volume.startswith("./certs/"):
                assert volume.split(":")[0].removeprefix("./certs/") in certs


def xml_file(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def mounted(svc: dict[str, Any], target: str) -> Path:
    [source] = [v.split(":")[0] for v in svc["volumes"] if v.split(":")[1] == target]
    return CLUSTER / source


def test_clickhouse_is_two_shards_of_two_replicas_on_three_keepers() -> None:
    clickhouse = services("clickhouse")
    keepers = services("keeper")
    names = set()
    for svc in clickhouse.values():
        names.add(str(mounted(svc, "/etc/clickhouse-server/config.d/cluster.xml")))
    [cluster_xml] = names
    root = xml_file(Path(cluster_xml))
    [cluster] = list(root.find("remote_servers") or [])
    shards = cluster.findall("shard")
    assert len(shards) == 2
    assert cluster.find("secret") is not None
    assert cluster.find("secret").get("from_env")  # type: ignore[union-attr]
    seen = {}
    for number, shard in enumerate(shards, start=1):
        assert shard.findtext("internal_replication") == "true"
        replicas = shard.findall("replica")
        assert len(replicas) == 2
        for replica in replicas:
            seen[replica.findtext("host")] = number
            assert replica.findtext("port") == "9000"
    assert set(seen) == set(clickhouse)
    for name, svc in clickhouse.items():
        assert svc["hostname"] == name
        node = xml_file(mounted(svc, "/etc/clickhouse-server/config.d/node.xml"))
        assert node.findtext("macros/shard") == str(seen[name])
        assert node.findtext("macros/replica") == name
        assert node.findtext("interserver_http_host") == name
    zookeeper = {(n.findtext("host"), n.findtext("port")) for n in root.iter("node")}
    assert zookeeper == {(k, "9181") for k in keepers}
    ids = set()
    for name, svc in keepers.items():
        keeper = xml_file(mounted(svc, "/etc/clickhouse-keeper/keeper_config.xml"))
        server_id = keeper.findtext("keeper_server/server_id")
        ids.add(server_id)
        raft = {
            s.findtext("id"): s.findtext("hostname")
            for s in keeper.iter("server")
        }  # fmt: skip
        assert raft == {k.split("-")[1]: k for k in keepers}
        assert raft[server_id] == name
        assert keeper.findtext("keeper_server/tcp_port") == "9181"
    assert len(ids) == 3


def cluster_name() -> str:
    root = xml_file(CLUSTER / "clickhouse" / "config.d" / "cluster.xml")
    [cluster] = list(root.find("remote_servers") or [])
    return cluster.tag


def test_the_aggregators_use_the_clickhouse_cluster_by_its_name() -> None:
    name = cluster_name()
    assert check_cluster_name(name) is None
    clickhouse = services("clickhouse")
    for svc in services("aggregate").values():
        env = compose_env(svc)
        assert env["STREAMTALLY_CLICKHOUSE_CLUSTER"] == name
        url = env["STREAMTALLY_CLICKHOUSE_URL"]
        host = url.split("@")[1].split(":")[0]
        assert host in clickhouse
        assert url.startswith("http://streamtally:${CLICKHOUSE_STREAMTALLY_PASSWORD}@")
    args, _ = k8s_containers()["aggregator"]
    assert flag_values(args)["--clickhouse-cluster"] == name


def test_the_clickhouse_user_writes_through_to_the_shards() -> None:
    users = xml_file(CLUSTER / "clickhouse" / "users.d" / "streamtally.xml")
    profile = users.find("profiles/streamtally")
    assert profile is not None
    # Not queued in the Distributed table's folder on disk, out of the purge's sight:
    assert profile.findtext("distributed_foreground_insert") == "1"
    user = users.find("users/streamtally")
    assert user is not None
    assert user.findtext("profile") == "streamtally"
    assert user.find("password") is not None
    assert user.find("password").get("from_env")  # type: ignore[union-attr]
    grants = {q.text for q in user.iter("query")}
    assert {"GRANT CLUSTER ON *.*", "GRANT REMOTE ON *.*"} <= grants  # ON CLUSTER, purge


# ---- HAProxy -----------------------------------------------------------------------------


def self_signed_pem(folder: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stats.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = folder / "streamtally.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_haproxy_accepts_its_configuration(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "haproxy is not installed (tests/run.sh installs it with apt)"
    text = (CLUSTER / "haproxy" / "haproxy.cfg").read_text()
    [mount] = [
        v for v in services("haproxy")["haproxy"]["volumes"] if v.endswith(".pem:ro")
    ]  # fmt: skip
    cert_path = mount.split(":")[1]
    assert cert_path in text
    config = tmp_path / "haproxy.cfg"
    config.write_text(text.replace(cert_path, str(self_signed_pem(tmp_path))))
    result = subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_sends_reports_to_every_collector_and_the_api_to_every_aggregator() -> None:
    text = (CLUSTER / "haproxy" / "haproxy.cfg").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    backends: dict[str, set[str]] = {}
    current = None
    for line in lines:
        if line.startswith("backend "):
            current = backends.setdefault(line.split()[1], set())
        elif line.startswith(("frontend ", "defaults", "global", "resolvers ")):
            current = None
        elif line.startswith("server ") and current is not None:
            current.add(line.split()[2])
    collectors = {f"{n}:{flag_values(s['command'])['--port']}" for n, s in
                  services("collect").items()}  # fmt: skip
    aggregators = {f"{n}:{flag_values(s['command'])['--port']}" for n, s in
                   services("aggregate").items()}  # fmt: skip
    assert backends == {"collectors": collectors, "aggregators": aggregators}
    [bind] = [line for line in lines if line.startswith("bind ")]
    assert " ssl crt " in bind
    assert not [line for line in lines if line.split()[:1] == ["log"]], "no access log"
    assert "http-request del-header X-Forwarded-For" in lines
    assert "option forwardfor" in lines
    assert any("deny" in line and "/v1/admin" in line for line in lines)
    ip = compose()["services"]["haproxy"]["networks"]["front"]["ipv4_address"]
    for svc in services("collect").values():
        assert flag_values(svc["command"])["--trusted-proxies"] == f"{ip}/32"


# ---- Kubernetes --------------------------------------------------------------------------


def test_aggregators_are_a_statefulset_whose_ordinal_is_the_shard() -> None:
    sts = k8s_object("StatefulSet", "aggregator")
    count = sts["spec"]["replicas"]
    args, env = k8s_containers()["aggregator"]
    assert flag_values(args)["--shard"] == f"$(POD_INDEX)/{count}"
    assert env["POD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    service = k8s_object("Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    link_port = int(flag_values(args)["--listen"].rsplit(":", 1)[1])
    assert {p["port"] for p in service["spec"]["ports"]} == {link_port}
    namespace = sts["metadata"]["namespace"]
    expected = [
        f"aggregator-{i}.{sts['spec']['serviceName']}.{namespace}.svc.cluster.local:{link_port}"
        for i in range(count)
    ]
    collector_args, _ = k8s_containers()["collector"]
    assert flag_values(collector_args)["--aggregators"].split(",") == expected


def test_collectors_are_a_deployment_with_an_autoscaler() -> None:
    hpa = k8s_object("HorizontalPodAutoscaler", "collector")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = k8s_object(target["kind"], target["name"])
    assert deployment["kind"] == "Deployment"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]  # utilization needs a request


def test_every_secret_referenced_exists_in_the_example() -> None:
    secrets = k8s_secrets()
    for doc in k8s():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Ingress"):
            continue
        spec = doc["spec"]
        if doc["kind"] == "Ingress":
            for tls in spec["tls"]:
                assert tls["secretName"] in secrets
            continue
        pod = spec["template"]["spec"]
        for container in pod["containers"]:
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], ref
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secrets[name]
                assert name in secrets
    for values in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()):
        for value in values["stringData"].values():
            assert "REPLACE" in value  # an example, never a real secret


def test_the_ingress_routes_players_to_collectors_and_never_the_admin_api() -> None:
    ingress = k8s_object("Ingress", "streamtally")
    routes = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert routes["/v1/r/"] == routes["/v1/keys"] == "collector"
    assert routes["/"] == "aggregator-api"
    for name in set(routes.values()):
        k8s_object("Service", name)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    assert "v1/admin" in annotations["nginx.ingress.kubernetes.io/server-snippet"]


# ---- metrics: Prometheus, alerts, Grafana ------------------------------------------------


def code_metrics() -> dict[str, str]:
    """Every series name the code's registry can expose, with its family name."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "summary": ("_sum", "_count"),
        "histogram": ("_bucket", "_sum", "_count"),
    }
    out = {}
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            out[family.name + suffix] = family.name
    return out


def problem_reasons() -> set[str]:
    found = set()
    todo: list[type[errors.HTTPProblem]] = [errors.HTTPProblem]
    while todo:
        cls = todo.pop()
        found.add(cls.reason)
        todo.extend(cls.__subclasses__())
    return found


def label_values(family: str, label: str) -> set[str]:
    values = set()
    for fam in REGISTRY.collect():
        if fam.name == family:
            values |= {s.labels[label] for s in fam.samples if label in s.labels}
    return values


SERIES = re.compile(r"\b((?:streamtally|process)_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)(=~|=)"([^"]*)"')


def check_expression(expr: str) -> set[str]:
    """The streamtally series an expression reads: each exposed by the code (or the cluster
    branch), with label values the code uses. Returns them."""
    metrics = code_metrics()
    used = set()
    for name, selector in SERIES.findall(expr):
        if not name.startswith("streamtally_"):
            assert name in metrics, name
            continue
        used.add(name)
        if name in CLUSTER_BRANCH.metrics:
            continue
        assert name in metrics, f"{name} is not a metric of the code"
        family = metrics[name]
        assert EXPOSURE[family].kind != "withheld", f"{name} is withheld from /metrics"
        for label, op, value in MATCHER.findall(selector or ""):
            if label in ("job", "instance"):  # Prometheus' target labels
                continue
            wanted = set(value.split("|")) if op == "=~" else {value}
            if family == "streamtally_reports_rejected":
                known = problem_reasons()
            else:
                known = label_values(family, label)
            assert wanted <= known, (name, label, wanted - known)
    return used


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((CLUSTER / "prometheus" / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    ("alert", "series"),
    [
        ("StreamTallyReportsRefused", "streamtally_reports_rejected_total"),
        ("StreamTallyLinkDown", "streamtally_link_up"),
        ("StreamTallySpoolGrowing", "streamtally_spool_bytes"),
        ("StreamTallyClickHouseDown", 'up{job="clickhouse"}'),
        ("StreamTallyFlushSlow", "streamtally_flush_seconds_sum"),
        ("StreamTallyPurgeFailed", "streamtally_purges_total"),
    ],
    ids=["reports-refused", "link-down", "spool-growing", "clickhouse-down", "flush-slow",
         "purge-failed"],
)  # fmt: skip
def test_the_alerts_of_issue_12_exist_and_read_real_series(alert: str, series: str) -> None:
    [rule] = [r for r in alert_rules() if r.get("alert") == alert]
    assert series in rule["expr"]
    check_expression(rule["expr"])


def test_every_alert_rule_is_well_formed() -> None:
    duration = re.compile(r"\d+[smhd]")
    names = set()
    for rule in alert_rules():
        assert rule["alert"] not in names
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
        if "for" in rule:
            assert duration.fullmatch(rule["for"])
        check_expression(rule["expr"])


def test_prometheus_scrapes_every_process_on_its_metrics_listener() -> None:
    config = yaml.safe_load((CLUSTER / "prometheus" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    for role, job in (("collect", "streamtally-collectors"),
                      ("aggregate", "streamtally-aggregators")):  # fmt: skip
        expected = set()
        for name, svc in services(role).items():
            listen = settings.parse_listen(flag_values(svc["command"])["--metrics-listen"])
            assert listen is not None
            expected.add(f"{name}:{listen[1]}")
        assert jobs[job] == expected
    port = xml_file(CLUSTER / "clickhouse" / "config.d" / "cluster.xml").findtext("prometheus/port")
    assert jobs["clickhouse"] == {f"{n}:{port}" for n in services("clickhouse")}
    rule_files = config["rule_files"]
    mounts = services("prometheus")["prometheus"]["volumes"]
    for path in rule_files:
        assert any(v.split(":")[1] == path for v in mounts)


def test_the_grafana_dashboard_reads_only_series_the_code_exposes() -> None:
    dashboard = json.loads((CLUSTER / "grafana" / "streamtally-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"].strip("${}") in variables
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")")
            used |= check_expression(target["expr"])
    # The dashboard shows the pipeline end to end: requests, memory, writes, spool, link.
    for series in ("streamtally_reports_accepted_total", "streamtally_reports_rejected_total",
                   "streamtally_events_accepted_total", "streamtally_active_sessions",
                   "streamtally_flush_seconds_sum", "streamtally_write_seconds_bucket",
                   "streamtally_spool_bytes", "streamtally_link_up",
                   "streamtally_purges_total"):  # fmt: skip
        assert series in used, series
