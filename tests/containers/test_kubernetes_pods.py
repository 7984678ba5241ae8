"""The pods of deploy/kubernetes, as ``make k8s`` renders them, run in the connector image
with what Kubernetes would give them: their args, a read-only root, the pod's user and
group and fsGroup, no capabilities, ``emptyDir`` where they write, and the config volume
(ConfigMap and Secret items, mode 0440) mounted where the manifests mount it. The replica
and the gateway answer their probes, an event sent to the gateway is checkpointed by the
replica and its rule's action delivered, and SIGTERM stops each within its grace period.
(No Kubernetes here: Docker stands in for the kubelet.)"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from devkit import kubernetes
from devkit.containers import OWNER_LABEL, KafkaContainer, PostgresContainer, owner
from devkit.postgres import scratch_database
from devkit.server import free_port
from tests.containers.conftest import Images
from tests.containers.support import logs, state
from tests.kubernetes_pods import (
    Doc,
    config_mount,
    container,
    find,
    port_number,
    write_config_volume,
)
from tests.support import wait_for


@contextlib.contextmanager
def pod(
    deployment: Doc,
    image: str,
    network: Network,
    volume: Path,
    env: Mapping[str, str],
    publish: Mapping[int, int],
) -> Iterator[DockerContainer]:
    """``deployment``'s one container, run as its pod spec says (Docker's terms)."""
    spec = deployment["spec"]["template"]["spec"]
    box = container(deployment)
    security = spec["securityContext"]
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    writable = {
        m["mountPath"]
        for m in box["volumeMounts"]
        if any(v["name"] == m["name"] and "emptyDir" in v for v in spec["volumes"])
    }
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    created = DockerContainer(
        image,
        command=list(box["args"]),
        env=dict(env),
        network=network,
        labels={OWNER_LABEL: owner()},
        name=f"kec-test-k8s-{uuid.uuid4().hex[:8]}",
        read_only=box["securityContext"]["readOnlyRootFilesystem"],
        user=user,
        group_add=[str(security["fsGroup"])],
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    for path in writable:  # emptyDir: writable by the pod's user
        created.tmpfs[path] = f"uid={security['runAsUser']},gid={security['fsGroup']}"
    mount_path, _ = config_mount(deployment)
    created.with_volume_mapping(str(volume), mount_path, "ro")
    for port, host_port in publish.items():
        created.ports[f"{port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]
    created.start()
    try:
        yield created
    finally:
        created.stop(force=True, delete_volume=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _sigterm(box: DockerContainer, grace: float) -> tuple[float, int]:
    """Stop as the kubelet does (SIGTERM, then SIGKILL after ``grace``): seconds, exit code."""
    wrapped = box.get_wrapped_container()
    started = time.monotonic()
    wrapped.stop(timeout=int(grace))
    return time.monotonic() - started, int(state(box)["ExitCode"])


def test_the_rendered_pods_run_read_only_as_their_user_and_stop_within_their_grace(
    images: Images,
    network: Network,
    kafka: KafkaContainer,
    postgres: PostgresContainer,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    docs = kubernetes.render(kubernetes.load(), images.connector)
    replica = find(docs, "Deployment", "kafka-event-connector")
    gateway = find(docs, "Deployment", "kafka-event-connector-gateway")
    metrics_port = port_number(container(replica), "metrics")
    http_port = port_number(container(gateway), "http")
    token = uuid.uuid4().hex
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.internal_address()}
    with scratch_database(postgres.dsn) as host_url:
        secrets = {
            "postgres-dsn": postgres.internal_dsn(host_url.rsplit("/", 1)[1]),
            "gateway-token": token,
        }
        volumes = {}
        for name, deployment in [("replica", replica), ("gateway", gateway)]:
            volumes[name] = tmp_path / name
            write_config_volume(docs, deployment, volumes[name], secrets)
        host_metrics, host_http = free_port(), free_port()
        started = time.monotonic()
        with (
            pod(replica, images.connector, network, volumes["replica"], env,
                {metrics_port: host_metrics}) as replica_box,
            pod(gateway, images.connector, network, volumes["gateway"], env,
                {http_port: host_http}) as gateway_box,
        ):  # fmt: skip
            probes = {
                "replica": (replica_box, f"http://127.0.0.1:{host_metrics}"),
                "gateway": (gateway_box, f"http://127.0.0.1:{host_http}"),
            }
            for name, (box, base) in probes.items():
                try:
                    wait_for(lambda b=base: _answers(f"{b}/healthz"), timeout=120,
                             interval=0.3, what=f"the {name}'s /healthz")  # fmt: skip
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; {name} logs:\n{logs(box)}") from None
                assert httpx.get(f"{base}/livez", timeout=5).json() == {"status": "alive"}
            ready = time.monotonic() - started

            sent = httpx.post(
                f"http://127.0.0.1:{host_http}/event/send_event/order-1",
                json={"event_key": "approve", "event_payload": {"n": 1}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert sent.status_code == 200, (sent.text, logs(replica_box))  # checkpointed
            refused = httpx.post(
                f"http://127.0.0.1:{host_http}/event/send_event/order-1",
                json={"event_key": "approve", "event_payload": {}},
                timeout=10,
            )
            assert refused.status_code == 401  # the token is the mounted secret's

            def delivered() -> bool:
                text = httpx.get(f"http://127.0.0.1:{host_metrics}/metrics", timeout=5).text
                return "kec_actions_delivered_total 1.0" in text

            wait_for(delivered, timeout=30, interval=0.3, what="the rule's action delivered")
            assert '"workflow":"fulfilment"' in logs(replica_box, 500).replace(" ", "")

            for name, deployment, box in [
                ("replica", replica, replica_box),
                ("gateway", gateway, gateway_box),
            ]:
                grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                took, code = _sigterm(box, grace)
                assert code == 0, f"{name} exited {code} on SIGTERM:\n{logs(box)}"
                assert took < grace
                report(f"kubernetes pods: the {name} stopped on SIGTERM in {took:.1f}s")
    report(f"kubernetes pods: replica and gateway ready {ready:.1f}s after start")
