"""Pods fail the way a real cluster's do.

The same cases on the practice runtime and on kind, same status fields.

The Dockerfile decides what a container runs on both; on the practice cluster a namespace may run
only its own images, and an image record written by hand is built by the runtime, never trusted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from kubernetes import client

from autograder.lab import images
from autograder.lesson import troubleshoot
from autograder.practice import catalog, dockerfile, supervise
from autograder.practice import container as sandbox
from autograder.practice.cluster import Practice
from autograder.shared import binaries, k8s, kubeconfig
from autograder.shared.provider import ClusterError, Lab, run
from test_kind import (  # noqa: F401 (fixtures)
    built_model_server_images,
    kind_cluster,
    kind_lab,
    model_server_images,
    node_image,
)

pytestmark = [pytest.mark.cluster]

IMAGE = "ml-api:v1"


@pytest.fixture(scope="module")
def runtime_cluster() -> Iterator[Practice]:
    """A practice cluster of this module's own (the shared one may run kwok's old pod stages)."""
    practice = Practice(cluster="lab-runtime", gpu_nodes=False, make_current=False)
    practice.up()
    yield practice
    supervise.stop_router(practice.context)
    practice.down()


@pytest.fixture
def runtime_lab(runtime_cluster: Practice) -> Iterator[Lab]:
    namespace = f"t-runtime-{uuid.uuid4().hex[:6]}"
    api = kubeconfig.api_client(runtime_cluster.context, runtime_cluster.kubeconfig_file)
    lab = Lab(provider="practice", context=runtime_cluster.context, namespace=namespace, api=api)
    lab.core.create_namespace({"metadata": {"name": namespace}})
    k8s.wait_for(
        lab.core.list_namespaced_service_account,
        namespace,
        field_selector="metadata.name=default",
        until=bool,
        timeout=30,
        what="the default ServiceAccount",
    )
    yield lab
    lab.core.delete_namespace(namespace)


@pytest.fixture(
    params=[
        "practice",
        pytest.param("kind", marks=[pytest.mark.kind, pytest.mark.docker, pytest.mark.slow]),
    ]
)
def cluster(request: pytest.FixtureRequest) -> Lab:
    """The same case on the practice runtime and on kind with real containers."""
    return request.getfixturevalue("runtime_lab" if request.param == "practice" else "kind_lab")


def kubectl(lab: Lab, *args: str) -> str:
    """An independent kubectl, as a student's terminal runs it."""
    config = (
        ["--kubeconfig", str(Practice(cluster=lab.context.removeprefix("kwok-")).kubeconfig_file)]
        if lab.provider == "practice"
        else []
    )
    command = [
        str(binaries.ensure(["kubectl"])["kubectl"]),
        *config,
        "--context",
        lab.context,
        "-n",
        lab.namespace,
    ]
    return run([*command, *args], what="kubectl " + " ".join(args)).stdout


def create_pod(lab: Lab, name: str, container: dict, **spec: object) -> None:
    lab.core.create_namespaced_pod(
        lab.namespace,
        {
            "metadata": {"name": name, "labels": {"case": name}},
            "spec": {"containers": [{"name": "app", **container}], **spec},
        },
    )


def wait_pod(
    lab: Lab, name: str, until: Callable[[client.V1Pod], bool], timeout: float, what: str
) -> client.V1Pod:
    pods = k8s.wait_for(
        lab.core.list_namespaced_pod,
        lab.namespace,
        field_selector=f"metadata.name={name}",
        until=lambda pods: pods if pods and until(pods[0]) else None,
        timeout=timeout,
        what=what,
    )
    return pods[0]


def status_of(pod: client.V1Pod) -> client.V1ContainerStatus:
    return pod.status.container_statuses[0]


def waiting(reason: str) -> Callable[[client.V1Pod], bool]:
    def reached(pod: client.V1Pod) -> bool:
        state = pod.status.container_statuses and status_of(pod).state.waiting
        return bool(state) and state.reason == reason

    return reached


def events(lab: Lab, name: str) -> list[str]:
    return [
        f"{event.reason}: {event.message}"
        for event in lab.core.list_namespaced_event(
            lab.namespace, field_selector=f"involvedObject.name={name}"
        ).items
    ]


def test_an_image_never_built_shows_ErrImagePull_then_ImagePullBackOff(cluster: Lab) -> None:
    tag = f"t-never-built-{uuid.uuid4().hex[:6]}:v1"
    create_pod(cluster, "nopull", {"image": tag, "imagePullPolicy": "IfNotPresent"})
    pod = wait_pod(cluster, "nopull", waiting("ImagePullBackOff"), 120, "ImagePullBackOff")
    assert pod.status.phase == "Pending"
    assert status_of(pod).ready is False and status_of(pod).restart_count == 0
    assert any(
        text.startswith(f'Failed: Failed to pull image "{tag}"')
        for text in events(cluster, "nopull")
    )
    assert any(text == "Failed: Error: ErrImagePull" for text in events(cluster, "nopull"))
    assert re.search(
        r"nopull\s+0/1\s+(ImagePullBackOff|ErrImagePull)", kubectl(cluster, "get", "pods")
    )


def test_an_image_never_loaded_with_pull_policy_never_is_ErrImageNeverPull(cluster: Lab) -> None:
    tag = f"t-never-built-{uuid.uuid4().hex[:6]}:v1"
    create_pod(cluster, "neverpull", {"image": tag, "imagePullPolicy": "Never"})
    pod = wait_pod(cluster, "neverpull", waiting("ErrImageNeverPull"), 60, "ErrImageNeverPull")
    assert (
        status_of(pod).state.waiting.message
        == f'Container image "{tag}" is not present with pull policy of Never'
    )


def test_a_crashing_container_is_restarted_with_back_off_and_keeps_its_last_output(
    cluster: Lab,
) -> None:
    create_pod(
        cluster,
        "crash",
        {"image": IMAGE, "command": ["python", "-c", "import sys; print('boom'); sys.exit(3)"]},
    )
    # The back-off's delays (at once, 10 s, 20 s...) are test_pod_clock's; here, states and texts.
    pod = wait_pod(
        cluster,
        "crash",
        lambda pod: waiting("CrashLoopBackOff")(pod) and status_of(pod).restart_count >= 2,
        90,
        "CrashLoopBackOff with 2 restarts",
    )
    state = status_of(pod)
    assert state.last_state.terminated.exit_code == 3
    assert state.last_state.terminated.reason == "Error"
    assert state.ready is False and state.started is False
    assert pod.status.phase == "Running"
    assert "boom" in kubectl(cluster, "logs", "crash", "--previous")
    assert "CrashLoopBackOff" in kubectl(cluster, "get", "pod", "crash")
    assert any(
        text.startswith("BackOff: Back-off restarting failed container app")
        for text in events(cluster, "crash")
    )


def test_diagnose_reports_the_crash_without_its_output_and_the_pull_failure(cluster: Lab) -> None:
    create_pod(
        cluster,
        "crashy",
        {"image": IMAGE, "command": ["python", "-c", "import sys; print('boom'); sys.exit(3)"]},
    )
    create_pod(
        cluster,
        "unpulled",
        {"image": f"t-never-built-{uuid.uuid4().hex[:6]}:v1", "imagePullPolicy": "IfNotPresent"},
    )
    wait_pod(cluster, "crashy", waiting("CrashLoopBackOff"), 90, "CrashLoopBackOff")
    wait_pod(cluster, "unpulled", waiting("ImagePullBackOff"), 120, "ImagePullBackOff")
    crash = troubleshoot.diagnose(cluster, "case=crashy")
    assert len(crash) == 1 and "is CrashLoopBackOff" in crash[0] and "boom" not in crash[0], crash
    assert "kubectl logs crashy --previous" in crash[0], crash
    pull = troubleshoot.diagnose(cluster, "case=unpulled")
    assert len(pull) == 1 and re.search(r"\b(ImagePullBackOff|ErrImagePull)\b", pull[0]), pull


def test_readiness_on_a_404_path_keeps_the_pod_unready_and_on_health_makes_it_ready(
    cluster: Lab,
) -> None:
    for name, path in (("unready", "/no-such-path"), ("ready", "/health")):
        create_pod(
            cluster,
            name,
            {
                "image": IMAGE,
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {
                    "httpGet": {"path": path, "port": 8080},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            },
        )
    pod = wait_pod(cluster, "ready", k8s.pod_ready, 120, "the pod probed on /health to be Ready")
    assert status_of(pod).ready is True and status_of(pod).started is True
    assert status_of(pod).state.running is not None
    wait_pod(
        cluster,
        "unready",
        lambda pod: any(
            text.startswith(
                "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404"
            )
            for text in events(cluster, "unready")
        ),
        60,
        "a 404 probe",
    )
    pod = cluster.core.read_namespaced_pod("unready", cluster.namespace)
    assert pod.status.phase == "Running" and not k8s.pod_ready(pod)
    assert status_of(pod).ready is False and status_of(pod).state.running is not None
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "ContainersNotReady")
    assert re.search(r"unready\s+0/1\s+Running", kubectl(cluster, "get", "pod", "unready"))


def test_a_failing_liveness_probe_restarts_the_container(cluster: Lab) -> None:
    create_pod(
        cluster,
        "unlive",
        {
            "image": IMAGE,
            "ports": [{"containerPort": 8080}],
            "livenessProbe": {
                "httpGet": {"path": "/no-such-path", "port": 8080},
                "initialDelaySeconds": 2,
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        },
    )
    pod = wait_pod(
        cluster,
        "unlive",
        lambda pod: pod.status.container_statuses and status_of(pod).restart_count >= 1,
        120,
        "a restart by the liveness probe",
    )
    assert status_of(pod).last_state.terminated is not None
    assert any(
        "failed liveness probe, will be restarted" in text for text in events(cluster, "unlive")
    )


def test_logs_show_the_processs_own_output_with_the_pods_env_and_args(cluster: Lab) -> None:
    create_pod(
        cluster,
        "talk",
        {
            "image": IMAGE,
            "command": ["python", "-c"],
            "env": [{"name": "WHO", "value": "pod"}],
            "args": [
                "import os, time; print('hello from', os.environ['WHO'], flush=True); "
                "time.sleep(600)"
            ],
        },
    )
    wait_pod(cluster, "talk", lambda pod: pod.status.phase == "Running", 120, "Running")
    deadline = time.monotonic() + 30
    while "hello from pod" not in logs_once_served(cluster, "talk"):
        assert time.monotonic() < deadline, "the pod's own output never reached kubectl logs"
        time.sleep(0.5)
    assert "hello from pod" in kubectl(cluster, "logs", "talk")


def logs_once_served(lab: Lab, pod: str) -> str:
    """`kubectl logs POD`, or "" while kwok has not yet read the pod's Logs object.

    The router writes it before the pod's Running status, but kwok's informer can lag the API
    server on a loaded machine: the first `kubectl logs` then says "no logs found" (once in CI).
    """
    try:
        return kubectl(lab, "logs", pod)
    except ClusterError as error:
        if "no logs found" not in str(error):
            raise
        return ""


def test_restart_policy_never_ends_in_succeeded_or_failed(cluster: Lab) -> None:
    for name, code in (("done", 0), ("failed", 1)):
        create_pod(
            cluster,
            name,
            {"image": IMAGE, "command": ["python", "-c", f"raise SystemExit({code})"]},
            restartPolicy="Never",
        )
    for name, phase, reason in (("done", "Succeeded", "Completed"), ("failed", "Failed", "Error")):
        pod = wait_pod(
            cluster, name, lambda pod, phase=phase: pod.status.phase == phase, 120, phase
        )
        assert status_of(pod).state.terminated.reason == reason
        assert status_of(pod).restart_count == 0


def _delete_and_wait_gone(lab: Lab, name: str, why: str) -> None:
    lab.core.delete_namespaced_pod(name, lab.namespace)
    k8s.wait_for(
        lab.core.list_namespaced_pod,
        lab.namespace,
        field_selector=f"metadata.name={name}",
        until=lambda pods: not pods,
        timeout=120,
        what=f"pod {name} gone ({why})",
    )


def test_deletion_sends_sigterm_and_sigkill_after_the_grace_period(cluster: Lab) -> None:
    create_pod(
        cluster,
        "server",
        {"image": IMAGE, "ports": [{"containerPort": 8080}]},
        terminationGracePeriodSeconds=3600,
    )
    marker = str(600 + uuid.uuid4().int % 1000)  # a child it forks must end with the container
    create_pod(
        cluster,
        "stubborn",
        {
            "image": IMAGE,
            "command": [
                "python",
                "-c",
                "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"subprocess.Popen(['sleep', '{marker}']); time.sleep(600)",
            ],
        },
        terminationGracePeriodSeconds=4,
    )
    for name in ("server", "stubborn"):
        wait_pod(cluster, name, k8s.pod_ready, 120, f"{name} Ready")
    # When SIGKILL comes (once the grace period is over, not before) is test_pod_clock's, on a
    # fake clock. Here both pods go: the server only if SIGTERM stopped it (its hour of grace is
    # far past the wait), the stubborn one only if SIGKILL came.
    _delete_and_wait_gone(cluster, "server", "the model server stops at SIGTERM")
    _delete_and_wait_gone(cluster, "stubborn", "SIGKILL after the 4 s grace period")

    def leftover() -> list[psutil.Process]:
        return [
            p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]
        ]

    deadline = time.monotonic() + 10
    while leftover() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftover(), "a process the container forked outlived it"


HOSTILE = """
import os, socket, pathlib
print("uid", os.getuid(), flush=True)
for path in ("/root/.kube/config", "/root/.kwok", "/etc/shadow", "/proc/1/root/etc/shadow", LEFT):
    try:
        pathlib.Path(path).read_bytes() if not os.path.isdir(path) else os.listdir(path)
        print("READ", path, flush=True)
    except OSError as error:
        print("denied", path, type(error).__name__, flush=True)
for port in PORTS:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        print("REACHED", port, flush=True)
    except OSError:
        print("unreachable", port, flush=True)
try:
    os.setuid(0)
    print("BECAME ROOT", flush=True)
except OSError:
    print("setuid denied", flush=True)
"""


def test_a_hostile_pod_spec_gets_no_more_rights_than_the_students_code(runtime_lab: Lab) -> None:
    if not sandbox.isolated():
        pytest.skip(
            "run by a user, a pod is that user's own code; isolation is for a runtime run as root"
        )
    api_port = int(runtime_lab.api.configuration.host.rsplit(":", 1)[1])
    etcd_ports = [
        int(port)
        for port in re.findall(
            r"127\.0\.0\.1:(\d+)",
            (Practice(cluster="lab-runtime").workdir / "kwok.yaml").read_text(),
        )
    ]
    left = (
        Path("/tmp") / f"left-by-the-grader-{uuid.uuid4().hex[:6]}.txt"
    )  # world-readable, in the shared /tmp
    left.write_text("secret")
    left.chmod(0o644)
    script = HOSTILE.replace("PORTS", repr([api_port, *etcd_ports])).replace(
        "LEFT", repr(str(left))
    )
    create_pod(
        runtime_lab,
        "hostile",
        {
            "image": IMAGE,
            "command": ["python", "-c", script],
            "securityContext": {
                "privileged": True,
                "runAsUser": 0,
                "allowPrivilegeEscalation": True,
                "capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]},
            },
            "volumeMounts": [{"name": "host", "mountPath": "/host"}],
        },
        hostNetwork=True,
        hostPID=True,
        restartPolicy="Never",
        volumes=[{"name": "host", "hostPath": {"path": "/"}}],
    )
    try:
        wait_pod(
            runtime_lab,
            "hostile",
            lambda pod: pod.status.phase in ("Succeeded", "Failed"),
            120,
            "the end",
        )
    finally:
        left.unlink()
    output = kubectl(runtime_lab, "logs", "hostile")
    assert f"uid {os.getuid()}" not in output and "uid " in output
    assert "READ" not in output and "REACHED" not in output and "BECAME ROOT" not in output, output
    assert output.count("denied") >= 6 and output.count("unreachable") >= 2, output


FLOODS = """
import os, sys
results = []
for name, folder in (("workdir", "."), ("tmp", "/tmp")):
    written = 0
    try:
        for index in range(4):
            with open(os.path.join(folder, f"flood-{index}"), "wb") as file:
                for _ in range(60):
                    file.write(b"x" * 2**20)
                    file.flush()
                    written += 1
        results.append(f"{name} took {written} MB")
    except OSError as error:
        results.append(f"{name} stopped after {written} MB: {error.strerror}")
for _ in range(40):
    sys.stdout.write("y" * 2**20)  # 40 MB without a newline: the log rotates past 10 MiB
print("", *results, sep="\\n")
"""


def test_a_container_writes_no_more_than_its_own_small_tmpfs_and_a_rotated_log(
    runtime_lab: Lab,
) -> None:
    if not sandbox.isolated():
        pytest.skip(
            "run by a user, a pod is that user's own code; isolation is for a runtime run as root"
        )
    create_pod(
        runtime_lab,
        "floods",
        {"image": IMAGE, "command": ["python", "-c", FLOODS]},
        restartPolicy="Never",
    )
    pod = wait_pod(
        runtime_lab,
        "floods",
        lambda pod: pod.status.phase in ("Succeeded", "Failed"),
        120,
        "the end",
    )
    folder = supervise.state_dir(runtime_lab.context) / "pods" / pod.metadata.uid
    output = kubectl(runtime_lab, "logs", "floods")
    assert pod.status.phase == "Succeeded", output
    assert re.search(
        r"\nworkdir stopped after (6[0-4]|[1-5]\d) MB: No space left on device\n"
        r"tmp stopped after 1[0-6] MB: No space left on device\n$",
        output,
    ), output[-2000:]
    assert (folder / "app" / "current.log").stat().st_size < 11 * 2**20
    assert folder.is_dir() and not list(folder.rglob("flood-*"))


FORKED = """
import os, pathlib, signal, sys
lines = pathlib.Path("/proc/self/status").read_text().splitlines()
status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
capabilities = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
print("caps", *(status[name].strip() for name in capabilities), flush=True)
print("no_new_privs", status["NoNewPrivs"].strip(), "argv", sys.argv, flush=True)
print("fds", sorted(int(fd) for fd in os.listdir("/proc/self/fd")), flush=True)
try:
    os.kill(os.getppid(), signal.SIGKILL)
    print("KILLED THE LAUNCHER", flush=True)
except OSError:
    print("launcher out of reach", flush=True)
import flask
flask.Flask.__call__ = None  # spoils this interpreter's Flask: no other pod may notice
sys.exit(3)
"""


def test_a_forked_container_holds_nothing_of_the_launcher_and_cannot_harm_the_next_pod(
    runtime_lab: Lab, tmp_path: Path
) -> None:
    if not sandbox.isolated():
        pytest.skip(
            "run by a user, a pod is that user's own code; isolation is for a runtime run as root"
        )
    (tmp_path / "app.py").write_text(FORKED)
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nWORKDIR /app\nCOPY app.py .\n")
    images.load_into_cluster(runtime_lab, "forked-hostile:v1", context=tmp_path)
    create_pod(
        runtime_lab,
        "forked",
        {"image": "forked-hostile:v1", "command": ["python", "app.py", "--flag"]},
        restartPolicy="Never",
    )
    pod = wait_pod(
        runtime_lab,
        "forked",
        lambda pod: pod.status.phase in ("Succeeded", "Failed"),
        60,
        "the end",
    )
    output = kubectl(runtime_lab, "logs", "forked")
    assert pod.status.phase == "Failed" and status_of(pod).state.terminated.exit_code == 3, output
    assert "caps" + " 0000000000000000" * 5 in output, output
    assert "no_new_privs 1 argv ['app.py', '--flag']" in output and "fds [0, 1, 2, 3]" in output, (
        output
    )
    assert "launcher out of reach" in output and "KILLED" not in output, output
    create_pod(
        runtime_lab,
        "next",
        {
            "image": IMAGE,
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
        },
    )
    wait_pod(
        runtime_lab,
        "next",
        lambda pod: bool(pod.status.container_statuses) and status_of(pod).ready,
        60,
        "the next pod to serve /health",
    )


SERVE = """import os, sys
print("argv", sys.argv[1:], "greeting", os.environ.get("GREETING"),
      "files", sorted(os.listdir(".")), flush=True)
"""


def build_folder(tmp_path: Path, dockerfile_text: str) -> Path:
    (tmp_path / "serve.py").write_text(SERVE)
    (tmp_path / "Dockerfile").write_text(dockerfile_text)
    return tmp_path


def load_folder(lab: Lab, tmp_path: Path, dockerfile_text: str, tag: str | None = None) -> str:
    """`docker build` and `kind load` on kind, the practice cluster's own build on practice; tag."""
    tag = tag or f"t-dockerfile-{uuid.uuid4().hex[:6]}:v1"
    folder = build_folder(tmp_path, dockerfile_text)
    if lab.provider == "kind":
        images.build(tag, folder, progress=False)
        images.load_into_cluster(lab, tag)
    else:
        images.load_into_cluster(lab, tag, context=folder)
    return tag


def test_workdir_copy_env_entrypoint_and_cmd_decide_what_runs(cluster: Lab, tmp_path: Path) -> None:
    tag = load_folder(
        cluster,
        tmp_path,
        "FROM python:3.11-slim\nWORKDIR /srv\nCOPY serve.py ./\n"
        'ENV GREETING="hello there"\nEXPOSE 8080\nUSER 1000\n'
        'ENTRYPOINT ["python", "serve.py"]\nCMD ["from-cmd"]\n',
    )
    create_pod(cluster, "by-cmd", {"image": tag, "imagePullPolicy": "Never"}, restartPolicy="Never")
    create_pod(
        cluster,
        "by-args",
        {"image": tag, "imagePullPolicy": "Never", "args": ["from-args"]},
        restartPolicy="Never",
    )
    for name, word in (("by-cmd", "from-cmd"), ("by-args", "from-args")):
        pod = wait_pod(
            cluster, name, lambda pod: pod.status.phase in ("Succeeded", "Failed"), 120, "the end"
        )
        output = kubectl(cluster, "logs", name)
        assert pod.status.phase == "Succeeded", output
        assert f"argv ['{word}'] greeting hello there files ['serve.py']" in output


def test_a_wrong_cmd_crash_loops(cluster: Lab, tmp_path: Path) -> None:
    tag = load_folder(
        cluster,
        tmp_path,
        'FROM python:3.11-slim\nWORKDIR /app\nCOPY serve.py .\nCMD ["python", "srever.py"]\n',
    )
    create_pod(cluster, "wrong-cmd", {"image": tag, "imagePullPolicy": "Never"})
    pod = wait_pod(cluster, "wrong-cmd", waiting("CrashLoopBackOff"), 120, "CrashLoopBackOff")
    assert status_of(pod).restart_count >= 1 and status_of(pod).last_state.terminated.exit_code != 0
    assert "srever.py" in kubectl(cluster, "logs", "wrong-cmd", "--previous")


def test_a_build_step_the_practice_cluster_cannot_run_is_refused_by_name(
    runtime_lab: Lab, tmp_path: Path
) -> None:
    with pytest.raises(
        dockerfile.UnsupportedInstruction, match=r"line 2: RUN apt-get.*`apt-get update`"
    ):
        load_folder(
            runtime_lab,
            tmp_path,
            "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\n",
            "t-dockerfile-apt:v1",
        )
    assert "t-dockerfile-apt:v1" not in catalog.loaded_images(runtime_lab)


def test_a_namespace_of_its_own_images_never_runs_the_clusters(
    runtime_lab: Lab, tmp_path: Path
) -> None:
    catalog.preload_reference_images(runtime_lab.core)
    runtime_lab.core.patch_namespace(
        runtime_lab.namespace,
        {"metadata": {"labels": {catalog.OWN_IMAGES_LABEL: catalog.OWN_IMAGES}}},
    )
    create_pod(runtime_lab, "theirs", {"image": "ml-api:v1", "imagePullPolicy": "Never"})
    wait_pod(
        runtime_lab,
        "theirs",
        waiting("ErrImageNeverPull"),
        60,
        "ErrImageNeverPull for the cluster's v1",
    )
    load_folder(
        runtime_lab,
        tmp_path,
        "FROM python:3.11-slim\nWORKDIR /app\nCOPY serve.py .\n"
        'CMD ["python", "serve.py", "mine"]\n',
        "ml-api:v1",
    )
    create_pod(
        runtime_lab,
        "mine",
        {"image": "ml-api:v1", "imagePullPolicy": "Never"},
        restartPolicy="Never",
    )
    wait_pod(
        runtime_lab, "mine", lambda pod: pod.status.phase == "Succeeded", 60, "its own v1 to run"
    )
    assert "argv ['mine']" in kubectl(runtime_lab, "logs", "mine")


def forged_record(lab: Lab, tag: str, files: dict[str, bytes]) -> None:
    """An image record written straight through the API, as a student's code could."""
    names = {f"f{index}": name for index, name in enumerate(files)}
    lab.core.create_namespaced_config_map(
        lab.namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=catalog.record_name(tag),
                labels={catalog.IMAGE_LABEL: "true"},
                annotations={catalog.TAG_ANNOTATION: tag},
            ),
            data={catalog.FILES_KEY: json.dumps(names)},
            binary_data={
                key: base64.b64encode(files[name]).decode() for key, name in names.items()
            },
        ),
    )


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (
            {"../../../../etc/cron.d/x": b"* * * * * root id", "Dockerfile": b"FROM python:3.11\n"},
            "may not hold",
        ),
        (
            {"app.py": b"", "Dockerfile": b"FROM python:3.11\nRUN apt-get install -y curl\n"},
            "RUN apt-get",
        ),
    ],
)
def test_a_record_written_by_hand_is_built_by_the_runtime_and_refused_as_a_pull_failure(
    runtime_lab: Lab, files: dict[str, bytes], reason: str
) -> None:
    tag = f"t-forged-{uuid.uuid4().hex[:6]}:v1"
    forged_record(runtime_lab, tag, files)
    create_pod(runtime_lab, "forged", {"image": tag, "imagePullPolicy": "Never"})
    pod = wait_pod(runtime_lab, "forged", waiting("ErrImagePull"), 60, "ErrImagePull")
    assert reason in status_of(pod).state.waiting.message
