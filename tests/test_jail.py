"""The kernel jail: what a student's code can see and touch inside it (needs root, util-linux)."""

from __future__ import annotations

import http.server
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from jupyter_client import KernelManager

from autograder import REPO_ROOT
from autograder.grading.kernel import bridge, jail
from autograder.grading.kernel import preloaded as kernel
from autograder.grading.worker import autograde as worker
from autograder.shared import isolation
from conftest import ask_as_nobody

PROBE = """
import json, os, pathlib, resource, socket, sys, urllib.request
def readable(path):
    try:
        pathlib.Path(path).read_bytes() if pathlib.Path(path).is_file() else os.listdir(path)
        return True
    except OSError:
        return False
def writable(path):
    try:
        open(path, "a").close()
        return True
    except OSError:
        return False
def reaches(port):
    with socket.socket() as connection:
        connection.settimeout(2)
        return connection.connect_ex(("127.0.0.1", port)) == 0
secret, secret_dir, outside, folder, host_port, api_port, grader_home, scratch = sys.argv[1:9]
report = {
    "secret_readable": readable(secret), "secret_dir_readable": readable(secret_dir),
    "outside_writable": writable(outside), "folder_writable": writable(folder + "/made-there.txt"),
    "cwd": os.getcwd(), "cwd_files": sorted(os.listdir(".")),
    "cwd_writable": writable("made-here.txt"),
    "tmp_writable": writable(scratch), "pids": [p for p in os.listdir("/proc") if p.isdigit()],
    "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0],
    "ids": [os.getgid(), os.getgroups(), os.getuid() >= 1_900_000_000],
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
    "grader_home": sorted(os.listdir(grader_home)) if os.path.isdir(grader_home) else [],
    "home": os.environ["HOME"], "kubeconfig": pathlib.Path(os.environ["KUBECONFIG"]).read_text(),
    "connection": json.loads(
        pathlib.Path(sys.argv[sys.argv.index("-f") + 1]).read_text())["transport"],
    "host_port_reached": reaches(int(host_port)),
    "api": urllib.request.urlopen(
        f"http://127.0.0.1:{api_port}/version", timeout=10).read().decode(),
}
print(json.dumps(report))
"""


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"the api server")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[int]:
    """A stand-in API server on the host's loopback; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.root
def test_jail_is_usable_on_this_machine() -> None:
    assert jail.unavailable_reason() is None


def _kubeconfig(server: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: student-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns}}]\n"
    )


@pytest.fixture
def student_kubeconfig(tmp_path: Path, api_server: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$KUBECONFIG: a student's, for the stand-in API server (the worker relays calls)."""
    path = tmp_path / "student.kubeconfig"
    path.write_text(_kubeconfig(f"http://127.0.0.1:{api_server}"))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.mark.root
def test_a_jailed_kernel_sees_no_secrets_works_in_a_copy_and_reaches_only_the_api_server(
    tmp_path: Path, api_server: int
) -> None:
    secret_dir = tmp_path / "kube"
    secret_dir.mkdir()
    secret = tmp_path / "admin.kubeconfig"
    secret.write_text("admin token")
    outside = (
        REPO_ROOT / f"jail-probe-{uuid.uuid4().hex[:8]}.txt"
    )  # outside /tmp, which the jail covers
    scratch = Path(
        f"/tmp/jail-scratch-{uuid.uuid4().hex[:8]}"
    )  # the jail's /tmp is a tmpfs of its own
    folder = tmp_path / "autograded" / "alice" / "lesson01"
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("a,b\n")
    (folder / "later.ipynb").symlink_to(secret)
    os.link(secret, folder / "hard-link")
    os.mkfifo(folder / "pipe")
    sockets = tmp_path / "sockets"
    sockets.mkdir(mode=0o1733)
    sockets.chmod(0o1733)
    connection = tmp_path / "connection.json"
    connection.write_text(json.dumps({"transport": "ipc", "ip": str(sockets / "kernel")}))
    student = tmp_path / "student.kubeconfig"
    student.write_text(_kubeconfig(f"http://127.0.0.1:{api_server}"))
    bridge.relay(sockets / "api.sock", "127.0.0.1", api_server)
    with socket.socket() as host_service:  # a host port that is not the API server: etcd, kwok, ...
        host_service.bind(("127.0.0.1", 0))
        host_service.listen()
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-m",
                "autograder.grading.kernel.jail",
                "--hide",
                str(secret),
                "--hide",
                str(secret_dir),
                "--api-socket",
                str(sockets / "api.sock"),
                "--",
                sys.executable,
                "-c",
                PROBE,
                str(secret),
                str(secret_dir),
                str(outside),
                str(folder),
                str(host_service.getsockname()[1]),
                str(api_server),
                str(Path.home()),
                str(scratch),
                "-f",
                str(connection),
            ],
            cwd=folder,
            env={"KUBECONFIG": str(student), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    report = json.loads(done.stdout)

    # The grader's home shows only the interpreter the kernel runs, when it lies
    # there; else it is not there.
    interpreter = Path(sys.base_prefix).resolve()
    assert set(report.pop("grader_home")) == (
        {interpreter.relative_to(Path.home()).parts[0]}
        if interpreter.is_relative_to(Path.home())
        else set()
    )
    assert report == {
        "secret_readable": False,
        "secret_dir_readable": False,
        "outside_writable": False,
        "folder_writable": False,
        "cwd": "/tmp/work",
        "cwd_files": ["data.csv"],
        "cwd_writable": True,
        "tmp_writable": True,
        "pids": ["1", report["pids"][1]],
        "caps": "0000000000000000",
        "ids": [jail.KERNEL_GID, [], True],
        "nproc": jail.LIMITS[resource.RLIMIT_NPROC],
        "home": "/tmp/home",
        "kubeconfig": student.read_text(),
        "connection": "ipc",
        "host_port_reached": False,
        "api": "the api server",
    }
    assert len(report["pids"]) == 2  # the kernel and its API forwarder
    assert sorted(p.name for p in folder.iterdir()) == [
        "data.csv",
        "hard-link",
        "later.ipynb",
        "pipe",
    ]
    assert not outside.exists() and not scratch.exists()
    assert "is not a regular file" in done.stderr


@pytest.mark.root
def test_the_launcher_imports_nothing_from_the_notebook_folder(tmp_path: Path) -> None:
    folder = tmp_path / "submission"
    (folder / "autograder" / "grading").mkdir(parents=True)
    marker = tmp_path / "shadowed-as-root"
    (folder / "autograder" / "__init__.py").write_text("")
    (folder / "autograder" / "grading" / "__init__.py").write_text("")
    (folder / "autograder" / "grading" / "jail.py").write_text(
        f"open({str(marker)!r}, 'w').write('root')\n"
    )
    connection = tmp_path / "connection.json"
    connection.write_text(json.dumps({"transport": "ipc", "ip": str(tmp_path / "kernel")}))
    argv = json.loads(
        (
            jail.write_kernelspec(tmp_path, []) / "kernels" / jail.KERNEL_NAME / "kernel.json"
        ).read_text()
    )["argv"]
    command = [arg.replace("{connection_file}", str(connection)) for arg in argv]
    kernel = command.index(jail.KERNEL_MODULE)
    command[kernel - 1 : kernel + 1] = ["-c", "print('ran')"]
    done = subprocess.run(
        command,
        cwd=folder,
        env={"PYTHONPATH": str(folder), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ran"), done.stderr
    assert not marker.exists()


@pytest.mark.root
def test_the_grading_kernel_has_the_lessons_libraries_loaded_and_no_submission_file_shadows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "lesson01"
    folder.mkdir()
    (folder / "requests.py").write_text("SHADOW = True\n")
    (folder / "helper.py").write_text("ANSWER = 42\n")
    monkeypatch.setenv("JUPYTER_PATH", "")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with (
        tempfile.TemporaryDirectory(prefix="kernelspec-") as specs,
        worker.jail_kernel(Path(specs), []) as config,
    ):
        manager = KernelManager(config=config, kernel_name=jail.KERNEL_NAME)
        manager.start_kernel(cwd=str(folder))
        try:
            kernel_client = manager.client()
            kernel_client.start_channels()
            kernel_client.wait_for_ready(timeout=60)
            printed: list[str] = []
            kernel_client.execute_interactive(
                f"import sys; print(sorted(m for m in {kernel.PRELOADED!r} if m not in "
                "sys.modules)); import helper, requests; print(helper.ANSWER, hasattr(requests, "
                "'SHADOW'), 'requests' in dir())",
                timeout=60,
                output_hook=lambda msg: printed.append(
                    msg["content"].get("text", "") or str(msg["content"].get("evalue", ""))
                ),
            )
            kernel_client.stop_channels()
        finally:
            manager.shutdown_kernel(now=True)
    assert "".join(printed).splitlines() == ["[]", "42 False True"]


@pytest.mark.root
def test_a_kernel_without_ipc_transport_is_refused(tmp_path: Path) -> None:
    connection = tmp_path / "connection.json"
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "autograder.grading.kernel.jail",
            "--",
            sys.executable,
            "-c",
            "",
            "-f",
            str(connection),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "transport = 'ipc'" in done.stderr


def test_kernelspec_runs_ipykernel_through_the_isolated_jail(tmp_path: Path) -> None:
    jail.write_kernelspec(
        tmp_path, [Path("/nowhere")], Path("/run/api.sock"), Path("/run/kernels.sock")
    )
    spec = json.loads((tmp_path / "kernels" / jail.KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][:4] == [sys.executable, "-I", "-m", "autograder.grading.kernel.jail"]
    assert spec["argv"][-5:] == [
        "-P",
        "-m",
        "autograder.grading.kernel.preloaded",
        "-f",
        "{connection_file}",
    ]
    assert spec["argv"][4:10] == [
        "--server",
        "/run/kernels.sock",
        "--hide",
        "/nowhere",
        "--api-socket",
        "/run/api.sock",
    ]
    assert spec["interrupt_mode"] == "message"


def test_a_hostname_server_is_reached_on_loopback_with_tls_checking_its_name() -> None:
    jailed = jail.jailed_kubeconfig(_kubeconfig("https://api.example.org:6443"))
    assert jail.api_address(_kubeconfig("https://api.example.org:6443")) == (
        "api.example.org",
        6443,
    )
    assert (
        "server: https://127.0.0.1:6443" in jailed and "tls-server-name: api.example.org" in jailed
    )
    assert jail.jailed_kubeconfig(_kubeconfig("https://127.0.0.1:32764")) == _kubeconfig(
        "https://127.0.0.1:32764"
    )


def _kernel_processes(uid: int) -> list[psutil.Process]:
    return [
        process for process in psutil.process_iter(["uids"]) if process.info["uids"].real == uid
    ]


@contextmanager
def _jailed_kernel(folder: Path) -> Iterator[tuple[KernelManager, Path]]:
    """A kernel started as the grading worker starts them; its manager and the server's socket."""
    with (
        tempfile.TemporaryDirectory(prefix="kernelspec-") as specs,
        worker.jail_kernel(Path(specs), []) as config,
    ):
        manager = KernelManager(config=config, kernel_name=jail.KERNEL_NAME)
        manager.start_kernel(cwd=str(folder))
        try:
            yield manager, Path(specs) / "server" / "kernels.sock"
        finally:
            manager.shutdown_kernel(now=True)


def _run_in(manager: KernelManager, code: str) -> str:
    kernel_client = manager.client()
    kernel_client.start_channels()
    try:
        kernel_client.wait_for_ready(timeout=60)
        printed: list[str] = []
        kernel_client.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda msg: printed.append(
                msg["content"].get("text", "") or str(msg["content"].get("evalue", ""))
            ),
        )
    finally:
        kernel_client.stop_channels()
    return "".join(printed)


def _listening_inode(server: psutil.Process) -> str:
    """The kernel server's listening socket, as /proc names it (socket:[inode])."""
    links = {
        os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.pid}/fd")
    }
    return next(link for link in links if link.startswith("socket:"))


@pytest.mark.root
def test_kernels_are_forks_of_the_warm_server_and_hold_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with _jailed_kernel(tmp_path) as (manager, server_socket):
        uid = jail.kernel_uid(manager.provisioner.pid)
        # The server's own forks hold its listening socket for a moment, until each closes it: the
        # server is the one this process forked.
        [server] = {
            psutil.Process(connection.pid)
            for connection in psutil.net_connections("unix")
            if connection.laddr == str(server_socket)
            and connection.pid
            and psutil.Process(connection.pid).ppid() == os.getpid()
        }
        seen = json.loads(
            _run_in(
                manager,
                (
                    "import json, os\n"
                    "links = sorted({os.readlink(f'/proc/self/fd/{fd}')"
                    " for fd in os.listdir('/proc/self/fd') if fd.isdigit()"
                    " and os.path.exists(f'/proc/self/fd/{fd}')})\n"
                    f"visible = os.path.exists({str(server_socket)!r})\n"
                    "print(json.dumps({'links': links, 'server_visible': visible}))"
                ),
            )
        )
        [kernel] = [
            process for process in _kernel_processes(uid) if process.parent().uids().real == 0
        ]
        assert server in kernel.parents()  # forked from the warm server, not a new interpreter
        assert (
            server.parent().pid == os.getpid()
        )  # the server is a fork of the worker, warm from the start
        assert not seen["server_visible"]
        assert _listening_inode(server) not in seen["links"]


COURSE_PROBE = """
import importlib, json, os, pathlib, sys
import autograder
from autograder import MANIFESTS
from autograder.lab import workloads
from autograder.lesson import fleet, observe
from autograder.modelserver import SOURCE
def imports(name):
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False
def reads(path):
    try:
        return bool(path.read_bytes() if path.is_file() else os.listdir(path))
    except OSError:
        return False
package = pathlib.Path(autograder.__file__).parent
print(json.dumps({
    "runtime": all(imports(name) for name in RUNTIME),
    "importable": sorted(name for name in COURSE if imports(name)),
    "loaded": sorted(name for name in sys.modules if name in COURSE),
    "readable": sorted(str(path) for path in (package / "course" / "steps.py",
                       package / "lesson" / "steps.py", package / "demo.py",
                       SOURCE / "app.py", SOURCE / "Dockerfile",
                       MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml") if reads(path)),
    "doers": sorted(name for module, name in ((workloads, "scale"), (workloads, "set_image"),
                    (workloads, "rollback"), (workloads, "delete_by_label"),
                    (fleet, "pods_per_node"), (observe, "node_loads")) if hasattr(module, name)),
}))
"""
KERNEL_RUNTIME = (
    "autograder.lab",
    "autograder.lab.images",
    "autograder.lab.traffic",
    "autograder.lesson.checks",
    "autograder.lesson.fleet",
    "autograder.lesson.handson",
    "autograder.lesson.observe",
    "autograder.lesson.troubleshoot",
    "autograder.lesson.manifests",
)
COURSE_MODULES = (
    "autograder.course.steps",
    "autograder.course.actions",
    "autograder.course.references",
    "autograder.demo",
    "autograder.bench.cluster",
    "autograder.bench.grade",
)


@pytest.mark.root
def test_a_graded_kernel_imports_the_runtime_but_no_step_reference_course_app_or_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    code = f"RUNTIME = {KERNEL_RUNTIME!r}\nCOURSE = {COURSE_MODULES!r}\n" + COURSE_PROBE
    with _jailed_kernel(tmp_path) as (manager, _):
        seen = json.loads(_run_in(manager, code))
    assert seen == {"runtime": True, "importable": [], "loaded": [], "readable": [], "doers": []}
    assert all(
        path.exists() for path in jail.course_only()
    )  # there to hide: the grader's own process reads them


@pytest.mark.root
def test_a_student_reaches_the_cluster_with_the_clients_default_kubeconfig(
    tmp_path: Path, api_server: int, student_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    with _jailed_kernel(tmp_path) as (manager, _):
        printed = _run_in(
            manager,
            "from kubernetes import client, config\nconfig.load_kube_config()\n"
            "print(client.Configuration.get_default_copy().host)",
        )
    assert printed.strip() == f"http://127.0.0.1:{api_server}"


@pytest.mark.root
def test_shell_lines_run_in_the_jailed_kernel_with_their_output_and_exit_code(
    tmp_path: Path, student_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    with _jailed_kernel(tmp_path) as (manager, _):
        printed = _run_in(manager, "!echo from a shell; exit 3\nprint(_exit_code)")
    assert printed.split() == ["from", "a", "shell", "3"]


@pytest.mark.root
def test_only_root_may_ask_the_kernel_server_for_a_kernel(
    tmp_path: Path, student_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    shared = Path(tempfile.mkdtemp(prefix="jail-shared-"))  # any user may reach it, unlike tmp_path
    shared.chmod(0o1777)
    connection = shared / "connection.json"
    connection.write_text(json.dumps({"transport": "ipc", "ip": str(shared / "kernel")}))
    connection.chmod(0o644)
    # A jailed command writes only where its sockets are: here, if the server ran it.
    request = {
        "command": [
            sys.executable,
            "-c",
            f"open({str(shared / 'escaped')!r}, 'w')",
            "-f",
            str(connection),
        ],
        "cwd": str(shared),
        "env": {"PATH": os.environ["PATH"]},
        "hide": [],
        "api_socket": None,
    }
    with _jailed_kernel(tmp_path) as (_, server_socket):
        server_socket.parent.chmod(
            0o755
        )  # past the folder only root may enter: the server itself must refuse
        server_socket.chmod(0o666)
        code = ask_as_nobody(server_socket, request)
    escaped = (shared / "escaped").exists()
    shutil.rmtree(shared)
    assert code == 127 and not escaped


@pytest.mark.root
def test_a_kernel_dies_with_the_command_its_kernelspec_started(
    tmp_path: Path, student_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", "")
    with _jailed_kernel(tmp_path) as (manager, _):
        uid = jail.kernel_uid(manager.provisioner.pid)
        assert _run_in(manager, "print('alive')").strip() == "alive"
        os.kill(
            manager.provisioner.pid, signal.SIGKILL
        )  # what jupyter_client does to a kernel that will not stop
        left = _kernel_processes(uid)
        psutil.wait_procs(left, timeout=10)
        assert not [process for process in left if process.is_running()]


def test_a_mount_the_host_takes_away_meanwhile_is_skipped_and_any_other_failure_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A classroom server confined while another test's container ends: its overlay vanished."""
    overlay = "/var/lib/docker/overlay2/ended/merged"
    tables = iter([["/", overlay, "/srv"], ["/", "/srv"], ["/", "/srv"]])
    remounted: list[str] = []

    def remount(*args: str) -> None:
        if args[-1] in (overlay, "/srv"):
            raise OSError(f"mount {args[-1]}: mount point does not exist")
        remounted.append(args[-1])

    monkeypatch.setattr(isolation, "_mount_points", lambda: next(tables))
    monkeypatch.setattr(isolation, "mount", remount)
    with pytest.raises(OSError, match="/srv"):
        isolation._read_only_everywhere(but=[])
    assert remounted == ["/"]
