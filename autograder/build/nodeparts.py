"""What goes into the offline kind node image, and how each part is made.

Pinned versions, the two Debian root filesystems, Go recipes for the binaries upstream ships in
images, kind's base files (from the kind Go module) with this image's changes, the Dockerfiles
of the node and of each component image, and a hash of all of it, which names the image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from autograder.build import baseimage
from autograder.shared import binaries, gobuild, pins
from autograder.shared.errors import LabError
from autograder.shared.gobuild import GoRecipe

logger = logging.getLogger(__name__)


ROOTFS_REPOSITORY = "k8s-ml-lab/kind-node-rootfs"

# kubeadm 1.34 picks etcd's flags from the image tag (3.6 flags for a 3.6 tag), so the node
# carries the etcd kubeadm lists, not the 3.5 server the practice cluster pins.
ETCD_VERSION = "3.6.5"
COREDNS_VERSION = "1.12.1"
CRI_TOOLS_VERSION = "1.34.0"
PAUSE_VERSION = "3.10.1"

# Exactly what `kubeadm config images list --kubernetes-version v1.34.12` prints, in its order.
KUBEADM_IMAGES = (
    *(
        f"registry.k8s.io/{name}:v{pins.KUBERNETES_VERSION}"
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    ),
    f"registry.k8s.io/coredns/coredns:v{COREDNS_VERSION}",
    f"registry.k8s.io/pause:{PAUSE_VERSION}",
    f"registry.k8s.io/etcd:{ETCD_VERSION}-0",
)
PAUSE_IMAGE = KUBEADM_IMAGES[5]


@dataclass(frozen=True)
class Rootfs:
    """A Debian bookworm root filesystem, debootstrapped once and kept as a Docker image."""

    name: str
    packages: tuple[str, ...]
    check: str  # a shell command that must pass inside it before it is tagged

    @property
    def tag(self) -> str:
        """The image's tag: the suite and a hash of the package list."""
        digest = hashlib.sha256(" ".join((baseimage.SUITE, *self.packages)).encode()).hexdigest()
        return f"{ROOTFS_REPOSITORY}:{self.name}-{baseimage.SUITE}-{digest[:12]}"


# What kind's base image installs, minus storage-test and rootless extras, plus Debian's runtime.
NODE_ROOTFS = Rootfs(
    name="node",
    packages=(
        "systemd",
        "conntrack",
        "iptables",
        "nftables",
        "iproute2",
        "ethtool",
        "util-linux",
        "mount",
        "kmod",
        "libseccomp2",
        "pigz",
        "e2fsprogs",
        "bash",
        "ca-certificates",
        "curl",
        "jq",
        "procps",
        "containerd",
        "runc",
        "containernetworking-plugins",
    ),
    check=(
        "containerd --version && runc --version | head -n1 && systemctl --version | head -n1 "
        "&& ls /usr/lib/cni/ptp"
    ),
)
# What upstream's distroless-iptables gives kube-proxy: iptables and nftables, conntrack, ipset.
IPTABLES_ROOTFS = Rootfs(
    name="iptables",
    packages=("iptables", "nftables", "conntrack", "ipset", "kmod"),
    check="iptables --version && nft --version && conntrack --version",
)
NODE_BINARIES = ("kubelet", "kubeadm", "kubectl")
KUBERNETES_IMAGE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)

# A static pod range: the first /24 kube-controller-manager hands out of kind's default pod
# subnet 10.244.0.0/16 (the control plane's). ptp needs no bridge and no image, unlike kindnetd;
# once the workers have joined, the lab gives each node its own range and routes (lab/kind.py).
POD_RANGE = "10.244.0.0/24"
CNI_CONFIG = {
    "cniVersion": "0.4.0",
    "name": "lab-ptp",
    "plugins": [
        {
            "type": "ptp",
            "ipMasq": True,
            "mtu": 1500,
            "ipam": {
                "type": "host-local",
                "dataDir": "/run/cni-ipam-state",
                "ranges": [[{"subnet": POD_RANGE}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}

# The binaries upstream ships inside the etcd, coredns images and beside kubelet (crictl).
NODE_RECIPES: tuple[GoRecipe, ...] = (
    GoRecipe(
        name="etcd",
        version=ETCD_VERSION,
        requires={"go.etcd.io/etcd/server/v3": f"v{ETCD_VERSION}"},
        packages={"etcd": "go.etcd.io/etcd/server/v3"},
    ),
    GoRecipe(
        name="coredns",
        version=COREDNS_VERSION,
        requires={"github.com/coredns/coredns": f"v{COREDNS_VERSION}"},
        packages={"coredns": "github.com/coredns/coredns"},
    ),
    GoRecipe(
        name="cri-tools",
        version=CRI_TOOLS_VERSION,
        requires={"sigs.k8s.io/cri-tools": f"v{CRI_TOOLS_VERSION}"},
        packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
        ldflags=(f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRI_TOOLS_VERSION}",),
    ),
)


class NodeImageError(LabError):
    """The node image could not be built; the message says why and what to do next."""


@dataclass(frozen=True)
class Component:
    """One image kubeadm runs, and how this build makes it."""

    ref: str  # as kubeadm lists it, e.g. registry.k8s.io/kube-apiserver:v1.34.12
    name: str  # the binary, and the file name in the build context
    path: str  # where the binary lives in the image
    needs_iptables: bool = False  # kube-proxy programs the node's iptables
    entrypoint: tuple[str, ...] = ()
    user: str = ""


def components(refs: tuple[str, ...] = KUBEADM_IMAGES) -> list[Component]:
    """How each image kubeadm lists is made: upstream's paths, entrypoints and users."""
    made = []
    for ref in refs:
        name = baseimage.split_tag(ref)[0].rsplit("/", 1)[-1]
        if name == "coredns":
            made.append(Component(ref, name, "/coredns", entrypoint=("/coredns",)))
        elif name == "pause":
            made.append(Component(ref, name, "/pause", entrypoint=("/pause",), user="65535:65535"))
        else:
            made.append(
                Component(ref, name, f"/usr/local/bin/{name}", needs_iptables=name == "kube-proxy")
            )
    return made


def go_module_dir(module: str, version: str) -> Path:
    """Where Go's module cache holds `module@version`, downloading it if needed."""
    if shutil.which("go") is None:
        raise NodeImageError(
            "Go is needed to fetch kind's base files and build the node's "
            "binaries; install Go >= 1.24 (https://go.dev/doc/install)"
        )
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise NodeImageError(
            f"go could not fetch {module}@{version}: {info.get('Error') or done.stderr.strip()}"
        )
    return Path(info["Dir"])


def kind_base_files() -> Path:
    """kind's base-image files (entrypoint, systemd units, containerd config) from its Go module."""
    return go_module_dir("sigs.k8s.io/kind", f"v{pins.KIND_VERSION}") / "images/base/files"


def _file_mode(relative: str) -> int:
    """kind's Dockerfile rule: scripts are 0755, everything else 0644 (the module cache is 0444)."""
    return 0o755 if relative.startswith(("usr/local/bin/", "kind/bin/")) else 0o644


def containerd_config(kind_config: str, pause_image: str = PAUSE_IMAGE) -> str:
    """kind's containerd config, adjusted for this image and for hosts short of capabilities.

    The sandbox image becomes the pause kubeadm lists; the fuse-overlayfs proxy plugin goes (it
    serves rootless Docker and is not built here); and pods never ask for an OOM score below
    containerd's own, which needs CAP_SYS_RESOURCE that some hosts (these CI machines) lack.
    """
    edits = (
        (r'sandbox_image = "[^"]*"', f'sandbox_image = "{pause_image}"'),
        (r"restrict_oom_score_adj = false", "restrict_oom_score_adj = true"),
    )
    text = kind_config
    for pattern, replacement in edits:
        text, replaced = re.subn(pattern, replacement, text)
        if replaced != 1:
            raise NodeImageError(
                f"kind's containerd config no longer has one {pattern.split()[0]} line; "
                f"update containerd_config() in {__name__} for kind v{pins.KIND_VERSION}"
            )
    return re.sub(r'\[proxy_plugins\][^\[]*\[proxy_plugins\."fuse-overlayfs"\][^\[]*', "", text)


def default_cni_manifest() -> str:
    """What kind applies as its default CNI: a record of the static CNI the node already has."""
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "lab-static-cni", "namespace": "kube-system"},
        "data": {"10-lab-ptp.conflist": json.dumps(CNI_CONFIG, indent=2)},
    }
    return (
        "# The node image carries a static ptp CNI config in /etc/cni/net.d; nothing to run.\n"
        + yaml.safe_dump(config_map, sort_keys=False)
    )


def node_files(kind_files: Path) -> dict[str, tuple[bytes, int]]:
    """Every small file the node image adds to the rootfs: path -> (content, mode)."""
    files = {
        str(path.relative_to(kind_files)): path.read_bytes()
        for path in sorted(kind_files.rglob("*"))
        if path.is_file() and "LICENSES" not in path.parts
    }
    files["etc/containerd/config.toml"] = containerd_config(
        files["etc/containerd/config.toml"].decode()
    ).encode()
    files["etc/cni/net.d/10-lab-ptp.conflist"] = json.dumps(CNI_CONFIG, indent=2).encode()
    files["kind/version"] = f"v{pins.KUBERNETES_VERSION}".encode()
    files["kind/manifests/default-cni.yaml"] = default_cni_manifest().encode()
    return {name: (content, _file_mode(name)) for name, content in files.items()}


NODE_SETUP = " && ".join(
    (
        # systemd in a container: kind's trimming of units that make no sense there.
        "find /lib/systemd/system/sysinit.target.wants/ -name "
        "systemd-tmpfiles-setup.service -delete",
        (
            "rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* "
            "/lib/systemd/system/local-fs.target.wants/* "
            "/lib/systemd/system/sockets.target.wants/*udev* "
            "/lib/systemd/system/sockets.target.wants/*initctl* "
            "/lib/systemd/system/basic.target.wants/*"
        ),
        "echo ReadKMsg=no >> /etc/systemd/journald.conf",
        "ln -sf /usr/lib/systemd/systemd /sbin/init",
        "systemctl enable kubelet.service containerd.service undo-mount-hacks.service",
        "systemctl mask systemd-binfmt.service",
        # kind's units and kind itself expect upstream's install paths.
        "for tool in containerd ctr containerd-shim-runc-v2; do ln -s /usr/bin/$tool "
        "/usr/local/bin/$tool; done",
        "mkdir -p /etc/kubernetes/manifests /opt/cni && ln -s /usr/lib/cni /opt/cni/bin",
        (
            "ctr oci spec"
            " | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + "
            '{"path": "/kind/bin/mount-product-files.sh"}\''
            " | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json"
        ),
    )
)

NODE_ENTRYPOINT = 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
# systemd must know it runs in a container, and it stops on SIGRTMIN+3 (SIGTERM re-executes it).
NODE_CONFIG = ("ENV container=docker", "STOPSIGNAL SIGRTMIN+3", NODE_ENTRYPOINT)


def node_dockerfile(rootfs: str) -> str:
    """The node stage: the rootfs plus kind's files, the binaries and kind's systemd set-up."""
    return "\n".join((f"FROM {rootfs}", "COPY rootfs/ /", f"RUN {NODE_SETUP}", *NODE_CONFIG)) + "\n"


# What distroless/static gives upstream's images: a CA bundle, users and a writable /tmp.
STATIC_BASE = {
    "base/etc/passwd": (
        (
            b"root:x:0:0:root:/root:/sbin/nologin\n"
            b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
        0o644,
    ),
    "base/etc/group": (b"root:x:0:\nnonroot:x:65532:\n", 0o644),
    "base/tmp/": (b"", 0o1777),
}


def component_dockerfile(component: Component, rootfs: str, iptables_rootfs: str) -> str:
    """One component image: distroless-like from scratch, or on the iptables rootfs (kube-proxy)."""
    lines = (
        [f"FROM {iptables_rootfs}"]
        if component.needs_iptables
        else [
            "FROM scratch",
            f"COPY --from={rootfs} /etc/ssl/certs/ca-certificates.crt "
            "/etc/ssl/certs/ca-certificates.crt",
            "COPY base/ /",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        ]
    )
    lines.append(f"COPY {component.name} {component.path}")
    if component.user:
        lines.append(f"USER {component.user}")
    if component.entrypoint:
        lines.append(f"ENTRYPOINT {json.dumps(list(component.entrypoint))}")
    return "\n".join(lines) + "\n"


def inputs_digest(files: dict[str, tuple[bytes, int]]) -> str:
    """A hash of everything that decides the image's content: versions, packages, files, recipes."""
    recipe = {
        "versions": {
            "kubernetes": pins.KUBERNETES_VERSION,
            "kind": pins.KIND_VERSION,
            "etcd": ETCD_VERSION,
            "coredns": COREDNS_VERSION,
            "cri-tools": CRI_TOOLS_VERSION,
            "pause": PAUSE_VERSION,
        },
        "rootfs": [NODE_ROOTFS.tag, IPTABLES_ROOTFS.tag],
        "node": node_dockerfile("rootfs"),
        "components": [component_dockerfile(c, "rootfs", "iptables") for c in components()],
        "static-base": {
            name: [content.decode(), mode] for name, (content, mode) in STATIC_BASE.items()
        },
        "files": {
            name: [hashlib.sha256(content).hexdigest(), mode]
            for name, (content, mode) in sorted(files.items())
        },
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def pause_binary() -> Path:
    """Upstream's pause (build/pause/linux/pause.c in k8s.io/kubernetes), compiled static here."""
    target = pins.cache_root() / "bin" / f"pause-{PAUSE_VERSION}" / "pause"
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise NodeImageError(
            "a C compiler is needed for the pause program; "
            "`apt-get install gcc libc6-dev` (Debian) and retry"
        )
    source = (
        go_module_dir("k8s.io/kubernetes", f"v{pins.KUBERNETES_VERSION}")
        / "build/pause/linux/pause.c"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".pause.{uuid.uuid4().hex[:8]}")
    logger.info("compiling pause %s from %s", PAUSE_VERSION, source)
    done = subprocess.run(
        [
            compiler,
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            "-s",
            f"-DVERSION=v{PAUSE_VERSION}",
            "-o",
            str(partial),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise NodeImageError(
            f"compiling pause failed (static glibc: `apt-get install libc6-dev`):\n"
            f"{done.stderr.strip()}"
        )
    partial.replace(target)
    return target


def gather_binaries() -> dict[str, Path]:
    """Every binary the node and its images need, built from Go modules (or C, for pause) once."""
    found = binaries.ensure([*NODE_BINARIES, *KUBERNETES_IMAGE_BINARIES])
    for recipe in NODE_RECIPES:
        folder = gobuild.build(recipe)
        found.update({name: folder / name for name in recipe.packages})
    found["pause"] = pause_binary()
    return found


def check_kubeadm_images(kubeadm: Path) -> None:
    """Fail early when kubeadm wants other images than this build preloads."""
    done = subprocess.run(
        [
            str(kubeadm),
            "config",
            "images",
            "list",
            "--kubernetes-version",
            f"v{pins.KUBERNETES_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    listed = tuple(done.stdout.split())
    if done.returncode != 0 or listed != KUBEADM_IMAGES:
        raise NodeImageError(
            f"kubeadm lists {', '.join(listed) or done.stderr.strip()}, but this build makes "
            f"{', '.join(KUBEADM_IMAGES)}; update the pins at the top of {__name__}"
        )
