"""The suite on pytest-xdist workers (tests/workers.py): a lab per worker, serial groups."""

from __future__ import annotations

import json
from pathlib import Path

from test_tiers import _pytest

CONFTEST = """import pytest

pytest_plugins = ["tiers", "workers"]


@pytest.fixture
def kind_cluster():
    \"\"\"A stand-in: the lab's kind cluster.\"\"\"


@pytest.fixture
def node_image():
    \"\"\"A stand-in: the kind node image alone.\"\"\"
"""
# Each test notes the worker it ran on and the lab it was given.
RECORD = """import json, os


def record(group):
    lab = {key: os.environ[key] for key in ("LAB_CACHE_DIR", "KWOK_WORKDIR", "KUBECONFIG")}
    line = {"group": group, "worker": os.environ["PYTEST_XDIST_WORKER"], **lab}
    with open(os.environ["WORKERS_RECORD"], "a") as out:
        out.write(json.dumps(line) + "\\n")
"""
# (file, test, the group it must run in) x 3; the free tests give the other worker its work.
TESTS = (
    ("test_engine.py", "@pytest.mark.docker\ndef test_docker_{n}():", "docker"),
    ("test_engine.py", "@pytest.mark.kind\ndef test_kind_{n}(kind_cluster):", "kind"),
    ("test_engine.py", "@pytest.mark.kind\ndef test_node_image_{n}(node_image):", "docker"),
    ("test_classroom_hub.py", "def test_hub_{n}():", "classroom"),
    ("test_free.py", "def test_free_{n}():\n    time.sleep(0.1)", "free"),
    ("test_free.py", "def test_more_free_{n}():\n    time.sleep(0.1)", "free"),
)
HEADER = "import time\n\nimport pytest\nfrom record import record\n"


def test_each_worker_has_its_own_lab_and_what_exists_once_runs_on_one_worker(
    tmp_path: Path,
) -> None:
    tests, shared = tmp_path / "tests", tmp_path / "cache"
    tests.mkdir()
    (shared / "bin").mkdir(parents=True)
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "record.py").write_text(RECORD)
    for name in {name for name, _, _ in TESTS}:
        (tests / name).write_text(HEADER)
    for name, test, group in TESTS:
        with open(tests / name, "a") as suite:
            suite.writelines(f"\n\n{test.format(n=n)}\n    record({group!r})\n" for n in range(3))
    record = tmp_path / "record.jsonl"
    done = _pytest(
        tmp_path,
        *("-m", "", "-n", "2", "--dist", "loadgroup", "tests"),
        WORKERS_RECORD=str(record),
        LAB_CACHE_DIR=str(shared),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 3 * len(TESTS)
    workers = {
        group: {run["worker"] for run in runs if run["group"] == group} for _, _, group in TESTS
    }
    # The kind cluster, Docker's images and the classroom's hub each exist once per machine.
    assert [len(workers[group]) for group in ("kind", "docker", "classroom")] == [1, 1, 1]
    labs = {
        run["worker"]: (run["LAB_CACHE_DIR"], run["KWOK_WORKDIR"], run["KUBECONFIG"])
        for run in runs
    }
    assert len(labs) == 2 and len(set(labs.values())) == 2
    for worker, (cache, kwok, kubeconfig) in labs.items():
        assert Path(cache) == shared / "xdist" / worker
        assert Path(kwok).parent == Path(kubeconfig).parent == Path(cache)
        assert (Path(cache) / "bin").resolve() == (shared / "bin").resolve()
