"""Start, find and stop the practice cluster's traffic router, and the cluster at a hosted start.

The router has one pidfile, checked with psutil; where a hosted JupyterLab starts, the whole
practice cluster starts in the background.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from autograder.shared import pins
from autograder.shared.errors import LabError
from autograder.shared.processes import PidFile, stop
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)

ROUTER_MODULE = "autograder.practice.router"
AT_START_ENV = "LAB_PRACTICE_AT_START"
# Where `python -m` finds the package when it runs from a checkout rather than an install.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def state_dir(context: str) -> Path:
    """Where the router keeps its lock, pid and logs for one cluster context."""
    path = pins.cache_root() / "traffic" / context
    path.mkdir(parents=True, exist_ok=True)
    return path


def router_pidfile(context: str) -> PidFile:
    return PidFile(state_dir(context) / "router.pid", ROUTER_MODULE)


def router_pid(context: str) -> int | None:
    """The pid of the router serving `context`, when one runs."""
    return router_pidfile(context).read()


def ensure_router(context: str, timeout: float = 30) -> int:
    """Start the router for this practice cluster unless one runs; returns its pid."""
    pid = router_pid(context)
    if pid:
        return pid
    log_path = state_dir(context) / "router.log"
    with log_path.open("ab") as out:
        # Its own session: the router outlives a notebook kernel restart, as the cluster does.
        process = subprocess.Popen(
            [sys.executable, "-m", ROUTER_MODULE, "--context", context],
            cwd=PACKAGE_PARENT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def started() -> int | None:
        """The router's pid once it has reconciled (it writes its pidfile then); 0 if it failed."""
        return router_pid(context) or (0 if process.poll() not in (None, 0) else None)

    pid = poll(started, lambda found: found is not None, timeout, interval=0.2)
    if not pid:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise LabError(f"the traffic router did not start; its log ({log_path}):\n{tail}")
    logger.info("traffic router running (pid %s, log %s)", pid, log_path)
    return pid


def stop_router(context: str, timeout: float = 15) -> bool:
    """Stop the router (and its model servers) for `context`; False when none ran."""
    pid = router_pid(context)
    if pid is None:
        return False
    stop(pid, grace=timeout)
    return True


def start_cluster_in_background() -> int | None:
    """`cluster up --provider practice` in its own process: a hosted connect() finds it ready.

    connect() waits for it. Only where LAB_CLUSTER is practice; LAB_PRACTICE_AT_START=0 leaves it to
    the first connect(). Returns the process's pid; its output goes to the cache.
    """
    if os.environ.get("LAB_CLUSTER") != "practice" or os.environ.get(AT_START_ENV, "1") == "0":
        return None
    log_path = pins.cache_root() / "practice-at-start.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "autograder", "cluster", "up", "--provider", "practice"],
            cwd=PACKAGE_PARENT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Reaped when it ends, so the server that started it keeps no zombie.
    threading.Thread(target=process.wait, name="practice-at-start", daemon=True).start()
    logger.info(
        "starting the practice cluster in the background (pid %s, log %s)", process.pid, log_path
    )
    return process.pid
