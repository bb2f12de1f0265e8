"""The kernel jail: what a student's code can see and touch from inside it (needs root and util-linux)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autograder import REPO_ROOT
from autograder.grading import jail

PROBE = """
import json, os, pathlib, sys
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
report = {
    "secret_readable": readable(sys.argv[1]), "secret_dir_readable": readable(sys.argv[2]),
    "outside_writable": writable(sys.argv[3]), "workdir_writable": writable("made-here.txt"),
    "tmp_writable": writable("/tmp/scratch"), "pids": [p for p in os.listdir("/proc") if p.isdigit()],
    "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0],
    "home": os.environ["HOME"], "kubeconfig": pathlib.Path(os.environ["KUBECONFIG"]).read_text(),
    "connection": pathlib.Path(sys.argv[sys.argv.index("-f") + 1]).read_text(),
}
print(json.dumps(report))
"""


def test_jail_is_usable_on_this_machine() -> None:
    assert jail.unavailable_reason() is None


def test_a_jailed_process_sees_no_secrets_and_writes_only_its_folder(tmp_path: Path) -> None:
    secret_dir = tmp_path / "kube"
    secret_dir.mkdir()
    secret = tmp_path / "admin.kubeconfig"
    secret.write_text("admin token")
    outside = REPO_ROOT / "jail-probe.txt"  # outside /tmp, which the jail replaces by a scratch tmpfs
    workdir = tmp_path / "autograded" / "alice" / "lesson01"
    workdir.mkdir(parents=True)
    student = tmp_path / "student.kubeconfig"
    student.write_text("student token")
    connection = tmp_path / "connection.json"
    connection.write_text('{"shell_port": 1}')

    done = subprocess.run(
        [sys.executable, "-m", "autograder.grading.jail", "--hide", str(secret), "--hide", str(secret_dir), "--",
         sys.executable, "-c", PROBE, str(secret), str(secret_dir), str(outside), "-f", str(connection)],
        cwd=workdir, env={"KUBECONFIG": str(student), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stdout)

    assert report == {
        "secret_readable": False, "secret_dir_readable": False, "outside_writable": False,
        "workdir_writable": True, "tmp_writable": True, "pids": ["1"], "caps": "0000000000000000",
        "home": "/tmp/home", "kubeconfig": "student token", "connection": '{"shell_port": 1}',
    }
    assert (workdir / "made-here.txt").is_file() and not outside.exists()
    assert not Path("/tmp/scratch").exists()


def test_kernelspec_runs_ipykernel_through_the_jail(tmp_path: Path) -> None:
    jail.write_kernelspec(tmp_path, [Path("/nowhere")])
    spec = json.loads((tmp_path / "kernels" / jail.KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][:3] == [sys.executable, "-m", "autograder.grading.jail"]
    assert spec["argv"][-4:] == ["-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert ["--hide", "/nowhere"] == spec["argv"][3:5]
    assert spec["interrupt_mode"] == "message"
