"""deploy/kubernetes as ``make k8s`` renders it (devkit/kubernetes.py): valid for the
Kubernetes version it targets (strict schemas: a typo'd field fails), probes, budgets,
services and annotations that point where the connector serves, a config the connector
itself accepts with the mounted secrets, and the image ``make images`` builds."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.config import load_config
from connector.config.models import is_loopback_host
from connector.dispatch import Dispatcher
from connector.gateway.server import GatewayServer
from connector.supervisor import STOP_TIMEOUT
from devkit import kubernetes
from devkit.errors import ManifestError
from devkit.project import DOCKER_DIR, connector_image
from kec.errors import ConfigFileError
from tests.kubernetes_pods import (
    SECRETS,
    Doc,
    container,
    deployments,
    find,
    port_number,
    write_config_volume,
)


@pytest.fixture
def docs(monkeypatch: pytest.MonkeyPatch) -> list[Doc]:
    monkeypatch.delenv("KEC_CONNECTOR_IMAGE", raising=False)
    return kubernetes.render(kubernetes.load())


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def config_text(docs: list[Doc]) -> str:
    return str(find(docs, "ConfigMap", "kafka-event-connector")["data"]["connector.yaml"])


# --- the schemas of the targeted version -------------------------------------------------


def test_every_document_is_valid_for_the_targeted_kubernetes_version(docs: list[Doc]) -> None:
    assert kubernetes.KUBERNETES_VERSION == "1.30"
    assert kubernetes.validate(docs) == []
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds


Mutation = Callable[[list[Doc]], None]


def _typo_in_a_probe(docs: list[Doc]) -> None:
    box = container(find(docs, "Deployment", "kafka-event-connector"))
    box["readinesProbe"] = box.pop("readinessProbe")


def _port_as_text(docs: list[Doc]) -> None:
    box = container(find(docs, "Deployment", "kafka-event-connector-gateway"))
    box["ports"][0]["containerPort"] = "8000"


def _unknown_budget_field(docs: list[Doc]) -> None:
    find(docs, "PodDisruptionBudget", "kafka-event-connector")["spec"]["maxUnavialable"] = 1


def _security_typo(docs: list[Doc]) -> None:
    box = container(find(docs, "Deployment", "kafka-event-connector"))
    box["securityContext"]["readOnlyRootFileSystem"] = True


def _unknown_kind(docs: list[Doc]) -> None:
    docs.append({"apiVersion": "v1", "kind": "Servise", "metadata": {"name": "x"}})


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_typo_in_a_probe, "Deployment/kafka-event-connector: spec.template.spec.containers.0:"),
        (_port_as_text, "containers.0.ports.0.containerPort: '8000' is not of type 'integer'"),
        (_unknown_budget_field, "PodDisruptionBudget/kafka-event-connector: spec:"),
        (_security_typo, "readOnlyRootFileSystem"),
        (_unknown_kind, "Servise"),
    ],
)
def test_a_typo_or_a_wrong_type_is_a_problem(
    docs: list[Doc], mutate: Mutation, expected: str
) -> None:
    broken = copy.deepcopy(docs)
    mutate(broken)
    problems = kubernetes.validate(broken)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_the_schemas_are_those_of_the_version_named() -> None:
    docs = kubernetes.render(kubernetes.load(), "kafka-event-connector:0.0.0")
    # preStop `sleep` (1.29) and unhealthyPodEvictionPolicy (1.26) are newer than 1.25.
    older = kubernetes.validate(docs, "1.25")
    assert any("'sleep' was unexpected" in p for p in older), older
    assert any("'unhealthyPodEvictionPolicy' was unexpected" in p for p in older), older
    with pytest.raises(ManifestError, match=r"no schemas for Kubernetes 1\.12"):
        kubernetes.validate(docs, "1.12")


def test_every_manifest_file_is_rendered() -> None:
    listed = {path.name for path in kubernetes.resource_files()}
    present = {p.name for p in kubernetes.MANIFEST_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


# --- what points where the connector serves ---------------------------------------------


def test_probes_ask_livez_and_healthz_on_the_port_the_config_serves(
    docs: list[Doc], tmp_path: Path
) -> None:
    connector = find(docs, "Deployment", "kafka-event-connector")
    with_secrets = load_config(write_config_volume(docs, connector, tmp_path), env={})
    assert with_secrets.metrics is not None and with_secrets.http is not None
    # The kubelet probes the pod's address: loopback would refuse it.
    assert not is_loopback_host(with_secrets.metrics.host)
    assert not is_loopback_host(with_secrets.http.host)
    serving = {
        "kafka-event-connector": ("metrics", with_secrets.metrics.port),
        "kafka-event-connector-gateway": ("http", with_secrets.http.port),
    }
    for name, deployment in deployments(docs).items():
        port_name, port = serving[name]
        box = container(deployment)
        assert port_number(box, port_name) == port
        for probe, path in [
            ("startupProbe", "/livez"),
            ("livenessProbe", "/livez"),
            ("readinessProbe", "/healthz"),
        ]:
            assert box[probe]["httpGet"] == {"path": path, "port": port_name}, (name, probe)


def test_the_metrics_port_is_annotated_for_prometheus(docs: list[Doc]) -> None:
    connector = find(docs, "Deployment", "kafka-event-connector")
    annotations = connector["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port_number(container(connector), "metrics")
    assert re.search(r"^metrics: \{host: [\d.]+, port: (\d+)\}$", config_text(docs), re.M)


def test_each_budget_selects_the_pods_of_one_deployment(docs: list[Doc]) -> None:
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    covered = set()
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        chosen = [
            name
            for name, d in deployments(docs).items()
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(chosen) == 1, (budget["metadata"]["name"], chosen)
        deployment = find(docs, "Deployment", chosen[0])
        assert selector == deployment["spec"]["selector"]["matchLabels"]
        # A budget that lets none go would block every drain; one that lets all go, none.
        assert budget["spec"]["maxUnavailable"] == 1 < deployment["spec"]["replicas"]
        covered.add(chosen[0])
    assert covered == set(deployments(docs)), "a Deployment without a budget"


def test_each_service_reaches_a_named_port_of_its_pods(docs: list[Doc]) -> None:
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        chosen = [
            d
            for d in deployments(docs).values()
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(chosen) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["port"] == port_number(container(chosen[0]), port["targetPort"])


# --- the config and its secrets ------------------------------------------------------------


@pytest.mark.parametrize("name", ["kafka-event-connector", "kafka-event-connector-gateway"])
def test_the_config_map_passes_the_connectors_own_validation(
    docs: list[Doc], tmp_path: Path, name: str
) -> None:
    config_file = write_config_volume(docs, find(docs, "Deployment", name), tmp_path)
    cfg = load_config(config_file, env={})
    assert cfg.checkpoint.backend == "postgres"  # several replicas share it
    assert cfg.checkpoint.url() == SECRETS["postgres-dsn"]  # the file's line end dropped
    assert cfg.http is not None and cfg.http.token is not None
    assert cfg.http.token.get_secret_value() == SECRETS["gateway-token"]
    assert set(SECRETS.values()) <= set(cfg.file_secrets)  # redacted from every log line
    assert cfg.kafka.bootstrap_servers == "kafka:9092"


def test_without_the_secrets_the_config_is_refused(docs: list[Doc], tmp_path: Path) -> None:
    config_file = tmp_path / "connector.yaml"
    config_file.write_text(config_text(docs))
    with pytest.raises(ConfigFileError, match=r"secrets/postgres-dsn") as caught:
        load_config(config_file, env={})
    assert "secrets/gateway-token" in str(caught.value)


def test_the_config_checksum_follows_the_config(docs: list[Doc]) -> None:
    data = find(docs, "ConfigMap", "kafka-event-connector")["data"]
    expected = hashlib.sha256(
        json.dumps({"kafka-event-connector": data}, sort_keys=True).encode()
    ).hexdigest()
    for deployment in deployments(docs).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[kubernetes.CONFIG_CHECKSUM] == expected
    changed = kubernetes.load()
    find(changed, "ConfigMap", "kafka-event-connector")["data"]["connector.yaml"] += "# edit\n"
    again = kubernetes.render(changed)
    annotations = find(again, "Deployment", "kafka-event-connector")["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert annotations[kubernetes.CONFIG_CHECKSUM] != expected


# --- the image, the user, the shutdown -----------------------------------------------------


def test_the_image_is_the_one_make_images_builds(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = {container(d)["image"] for d in deployments(docs).values()}
    assert images == {connector_image()}
    # Unrendered (kubectl apply -k), the placeholder is the repository make images tags
    # :latest as well.
    assert connector_image().rsplit(":", 1)[0] == kubernetes.IMAGE_PLACEHOLDER
    monkeypatch.setenv("KEC_CONNECTOR_IMAGE", "registry.example/kec:1.2.3")
    rendered = kubernetes.render(kubernetes.load())
    assert {container(d)["image"] for d in deployments(rendered).values()} == {
        "registry.example/kec:1.2.3"
    }
    given = kubernetes.render(kubernetes.load(), "registry.example/kec@sha256:" + "0" * 64)
    assert {container(d)["image"] for d in deployments(given).values()} == {
        "registry.example/kec@sha256:" + "0" * 64
    }
    with pytest.raises(ManifestError, match="no container of the manifests names the image"):
        kubernetes.render(docs, "again:1")  # rendered already: no placeholder left


def test_pods_run_as_the_images_user_on_a_read_only_root(docs: list[Doc]) -> None:
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    data_dir = re.search(r"KEC_DATA_DIR=(\S+)", dockerfile)
    assert uid and data_dir
    for deployment in deployments(docs).values():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(uid.group(1))
        box = container(deployment)
        assert box["securityContext"]["readOnlyRootFilesystem"] is True
        assert box["securityContext"]["allowPrivilegeEscalation"] is False
        assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert "limits" in box["resources"] and "requests" in box["resources"]
        # What it may write is mounted writable: the data directory and /tmp.
        empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        writable = {m["mountPath"] for m in box["volumeMounts"] if m["name"] in empty}
        assert writable == {data_dir.group(1), "/tmp"}
        (config,) = [v for v in spec["volumes"] if "projected" in v]
        assert config["projected"]["defaultMode"] == 0o440  # the group is fsGroup's


def _default(function: Callable[..., object], name: str) -> float:
    return float(inspect.signature(function).parameters[name].default)


def test_the_grace_period_covers_the_shutdown(docs: list[Doc]) -> None:
    connector = find(docs, "Deployment", "kafka-event-connector")["spec"]["template"]["spec"]
    # The dispatcher waits for the deliveries of the partitions it gives up, then stops.
    dispatcher = _default(Dispatcher, "release_timeout") + _default(Dispatcher.stop, "timeout")
    assert connector["terminationGracePeriodSeconds"] > max(dispatcher, STOP_TIMEOUT)
    gateway = find(docs, "Deployment", "kafka-event-connector-gateway")
    pause = container(gateway)["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = _default(GatewayServer, "graceful")
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + graceful


def test_the_rendered_text_reads_back_as_the_documents(docs: list[Doc], tmp_path: Path) -> None:
    out = tmp_path / "kubernetes.yaml"
    out.write_text(kubernetes.dump(docs))
    assert kubernetes.read_documents(out) == docs
    assert "connector.yaml: |" in out.read_text()  # the config stays readable
    assert kubernetes.main(["validate", str(out)]) == 0
