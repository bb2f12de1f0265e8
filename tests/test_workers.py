"""The suite on pytest-xdist workers (tests/workers.py): a lab per worker, serial groups."""

from __future__ import annotations

import json
from pathlib import Path

from test_tiers import _pytest

CONFTEST = 'pytest_plugins = ["tiers", "workers"]\n'
# Each test notes the worker it ran on and the lab it was given.
RECORD = """import json, os
from pathlib import Path

import pytest


def record(name):
    lab = {key: os.environ[key] for key in ("LAB_CACHE_DIR", "KWOK_WORKDIR", "KUBECONFIG")}
    line = {"test": name, "worker": os.environ["PYTEST_XDIST_WORKER"], **lab}
    with open(os.environ["WORKERS_RECORD"], "a") as out:
        out.write(json.dumps(line) + "\\n")
"""
GROUPS = ("docker", "kind", "classroom", "free")
SUITE = {
    "test_engine.py": "from record import record\nimport pytest\n\n"
    + "".join(
        f"@pytest.mark.docker\ndef test_docker_{n}():\n    record('docker')\n\n" for n in range(3)
    )
    + "".join(f"@pytest.mark.kind\ndef test_kind_{n}():\n    record('kind')\n\n" for n in range(3)),
    "test_classroom_hub.py": "from record import record\n\n"
    + "".join(f"def test_hub_{n}():\n    record('classroom')\n\n" for n in range(3)),
    "test_free.py": "import time\nfrom record import record\n\n"
    + "".join(
        f"def test_free_{n}():\n    time.sleep(0.1)\n    record('free')\n\n" for n in range(8)
    ),
}


def test_each_worker_has_its_own_lab_and_what_exists_once_runs_on_one_worker(
    tmp_path: Path,
) -> None:
    tests, shared = tmp_path / "tests", tmp_path / "cache"
    tests.mkdir()
    (shared / "bin").mkdir(parents=True)
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "record.py").write_text(RECORD)
    for name, text in SUITE.items():
        (tests / name).write_text(text)
    record = tmp_path / "record.jsonl"
    done = _pytest(
        tmp_path,
        *("-m", "", "-n", "2", "--dist", "loadgroup", "tests"),
        WORKERS_RECORD=str(record),
        LAB_CACHE_DIR=str(shared),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 17
    workers = {name: {run["worker"] for run in runs if run["test"] == name} for name in GROUPS}
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
