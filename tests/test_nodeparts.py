"""What the offline kind node image is made of: files, modes, configs, inputs hash (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autograder.build import nodeparts
from autograder.shared import binaries, pins


@pytest.fixture(scope="module")
def kind_base_files() -> Path:
    """kind's own files, from its Go module (which Go downloads once into its cache)."""
    return nodeparts.kind_base_files()


@pytest.fixture(scope="module")
def files(kind_base_files: Path) -> dict[str, tuple[bytes, int]]:
    return nodeparts.node_files(kind_base_files)


def test_scripts_get_their_exec_bits_back(files: dict[str, tuple[bytes, int]]) -> None:
    assert files["usr/local/bin/entrypoint"][1] == 0o755
    assert files["kind/bin/mount-product-files.sh"][1] == 0o755
    assert files["etc/systemd/system/kubelet.service"][1] == 0o644
    assert not any(name.startswith("LICENSES") for name in files)


def test_node_says_its_version_and_carries_a_static_cni(
    files: dict[str, tuple[bytes, int]],
) -> None:
    assert files["kind/version"][0] == f"v{pins.KUBERNETES_VERSION}".encode()
    conflist = json.loads(files["etc/cni/net.d/10-lab-ptp.conflist"][0])
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["ptp", "portmap"]
    manifest = yaml.safe_load(files["kind/manifests/default-cni.yaml"][0])
    assert manifest["kind"] == "ConfigMap"
    assert json.loads(manifest["data"]["10-lab-ptp.conflist"]) == conflist


def test_containerd_uses_kubeadms_pause_and_drops_the_rootless_plugin(
    files: dict[str, tuple[bytes, int]],
) -> None:
    config = files["etc/containerd/config.toml"][0].decode()
    assert f'sandbox_image = "{nodeparts.PAUSE_IMAGE}"' in config
    assert "proxy_plugins" not in config
    assert "SystemdCgroup = true" in config


def test_an_unfamiliar_containerd_config_is_refused() -> None:
    with pytest.raises(nodeparts.NodeImageError, match="sandbox_image"):
        nodeparts.containerd_config("version = 2\n")


def test_components_follow_upstream_layouts() -> None:
    made = {component.name: component for component in nodeparts.components()}
    assert set(made) == {
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "coredns",
        "pause",
        "etcd",
    }
    assert made["kube-proxy"].needs_iptables and not made["etcd"].needs_iptables
    assert made["coredns"].entrypoint == ("/coredns",)
    assert made["pause"].user == "65535:65535"
    scratch = nodeparts.component_dockerfile(made["kube-apiserver"], "rootfs:x", "iptables:x")
    assert scratch.startswith("FROM scratch") and "ca-certificates.crt" in scratch
    assert "COPY kube-apiserver /usr/local/bin/kube-apiserver" in scratch
    assert nodeparts.component_dockerfile(made["kube-proxy"], "rootfs:x", "iptables:x").startswith(
        "FROM iptables:x"
    )


def test_the_inputs_hash_moves_only_with_the_inputs(files: dict[str, tuple[bytes, int]]) -> None:
    same = nodeparts.inputs_digest(dict(files))
    assert same == nodeparts.inputs_digest(files)
    changed = {**files, "kind/version": (b"v0.0.0", 0o644)}
    assert nodeparts.inputs_digest(changed) != same


@pytest.mark.slow
def test_kubeadm_lists_exactly_the_images_the_node_preloads() -> None:
    kubeadm = binaries.ensure(["kubeadm"])["kubeadm"]
    nodeparts.check_kubeadm_images(kubeadm)
