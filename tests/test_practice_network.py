"""The practice cluster is reachable only from its own machine, its etcd only with its certificate.

Hostile: each test plays someone on the student's network (a shared Wi-Fi, a hub's pod network) or a
local program without the cluster's keys, and must be turned away.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from autograder import MANIFESTS
from autograder.course.steps import serve_lesson_images
from autograder.lab import workloads as w
from autograder.lab.cluster import connect
from autograder.practice.cluster import Practice

pytestmark = pytest.mark.cluster

CONTROL_PLANE = {
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
}
LOOPBACK = {"127.0.0.1", "::1"}


def listening(practice: Practice) -> dict[tuple[str, int], str]:
    """(address, port) -> process name of every TCP socket the cluster's processes listen on."""
    names = {process.pid: process.name() for process in practice.processes()}
    return {
        (c.laddr.ip, c.laddr.port): names[c.pid]
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in names
    }


def other_addresses() -> list[str]:
    """This machine's addresses on its networks: every one but loopback and IPv6 link-local."""
    found = {
        ipaddress.ip_address(address.address.split("%")[0])
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }
    return sorted(
        str(address) for address in found if not address.is_loopback and not address.is_link_local
    )


def etcd_port(practice: Practice) -> int:
    """The client port kwokctl gave the cluster's etcd, as saved in the cluster's kwok.yaml."""
    documents = yaml.safe_load_all((practice.workdir / "kwok.yaml").read_text())
    return next(
        document["options"]["etcdPort"]
        for document in documents
        if document and document.get("kind") == "KwokctlConfiguration"
    )


def range_request(key_prefix: str) -> dict[str, str]:
    """etcd's v3 JSON gateway body for `etcdctl get KEY_PREFIX --prefix --keys-only`."""
    end = key_prefix[:-1] + chr(ord(key_prefix[-1]) + 1)
    return {
        "key": base64.b64encode(key_prefix.encode()).decode(),
        "range_end": base64.b64encode(end.encode()).decode(),
        "keys_only": True,
    }


@pytest.fixture(scope="module")
def serving(practice_cluster: Practice) -> Iterator[Practice]:
    """The cluster with the lesson's pods running: the runtime's relays and containers too."""
    lab = connect("practice", namespace=f"t-network-{uuid.uuid4().hex[:6]}")
    serve_lesson_images(lab)
    w.apply(lab, w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml"))
    w.wait_for_rollout(lab, "ml-api", progress=False)
    yield practice_cluster
    lab.core.delete_namespace(lab.namespace)


def test_every_port_of_the_cluster_listens_on_loopback_only(serving: Practice) -> None:
    sockets = listening(serving)
    print(
        *sorted(f"{name:<24} {address}:{port}" for (address, port), name in sockets.items()),
        sep="\n",
    )
    assert set(sockets.values()) >= CONTROL_PLANE, (
        "every component of the control plane was found listening"
    )
    exposed = {
        f"{address}:{port}": name
        for (address, port), name in sockets.items()
        if address not in LOOPBACK
    }
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_no_port_of_the_cluster_answers_on_the_machines_addresses(serving: Practice) -> None:
    addresses = other_addresses()
    if not addresses:
        pytest.skip("this machine has no address but loopback: nothing to reach the cluster from")
    ports = sorted({port for _, port in listening(serving)})
    answered = []
    for address in addresses:
        for port in ports:
            try:
                socket.create_connection((address, port), timeout=5).close()
                answered.append(f"{address}:{port}")
            except ConnectionRefusedError:
                pass
    assert not answered, f"the cluster answered from the network at {answered}"


def read_keys(url: str, **options: object) -> list[str] | None:
    """The cluster role bindings' keys as etcd lists them to a client; None if it is refused."""
    try:
        answer = requests.post(
            url, json=range_request("/registry/clusterrolebindings/"), timeout=10, **options
        )
    except (
        requests.exceptions.ConnectionError
    ):  # TLS refused: no certificate, or one etcd does not trust
        return None
    if answer.status_code != 200:
        return None
    return [base64.b64decode(kv["key"]).decode() for kv in answer.json().get("kvs", [])]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A client certificate claiming the cluster admin's name and group, signed by its own key."""
    cert, key = folder / "intruder.crt", folder / "intruder.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/O=system:masters/CN=kwok-admin",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            "extendedKeyUsage=clientAuth",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_etcd_answers_only_a_client_with_the_clusters_certificate(
    practice_cluster: Practice, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{etcd_port(practice_cluster)}/v3/kv/range"
    pki = practice_cluster.workdir / "pki"
    https = f"https://{address}"
    assert read_keys(f"http://{address}") is None, "plain HTTP"
    assert read_keys(https, verify=pki / "ca.crt") is None, "TLS without a client certificate"
    assert read_keys(https, verify=pki / "ca.crt", cert=self_signed(tmp_path)) is None, (
        "another authority's"
    )
    keys = read_keys(https, verify=pki / "ca.crt", cert=(pki / "admin.crt", pki / "admin.key"))
    assert "/registry/clusterrolebindings/cluster-admin" in (keys or []), (
        "the cluster's certificate reads"
    )
