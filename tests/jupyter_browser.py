"""JupyterLab in headless Chromium: serve a folder, open notebooks, run cells, keep screenshots."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from autograder import REPO_ROOT
from autograder.build import hostedimage
from autograder.lab.cluster import connect
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)

CHROMIUM = (
    "/usr/bin/chromium"  # Debian's package; Playwright's own browser download cannot work here
)
# Headless as root, and no calls home: this machine's network is closed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"  # gitignored; CI keeps it as an artefact
VIEWPORT = {"width": 1400, "height": 1000}
USER_SETTINGS = Path("~/.jupyter/lab/user-settings")  # JupyterLab's default user settings folder
NEWS_SETTINGS = (
    USER_SETTINGS / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
)
NO_NEWS = {"fetchNews": "false"}

# Starts a cell through JupyterLab's own command, as Shift+Enter would, and records how it ended.
START_CELL = """index => {
  const panel = window.jupyterapp.shell.currentWidget;
  panel.content.activeCellIndex = index;
  panel.content.deselectAll();
  window.labCells = window.labCells || {};
  window.labCells[index] = null;
  window.jupyterapp.commands.execute('notebook:run-cell').then(
    ok => { window.labCells[index] = {ok: ok !== false}; },
    error => { window.labCells[index] = {ok: false, error: String(error)}; });
}"""
CELL_DONE = (
    "index => window.labCells && window.labCells[index] !== null "
    "&& window.labCells[index] !== undefined"
)
CELL_OUTPUTS = (
    "index => window.jupyterapp.shell.currentWidget.content.widgets[index].model.outputs.toJSON()"
)
KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return Boolean(panel && panel.context.isReady && kernel && kernel.status === 'idle');
}"""


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its address and token, and where the notebooks are below its root."""

    url: str  # ends with "/"
    token: str
    namespace: str  # where its kernels' connect() works (LAB_NAMESPACE)
    where: str  # what serves it, for reports
    namespace_phase: Callable[[str], str]  # a namespace's phase on the cluster its kernels use
    students: str = "notebooks"
    masters: str = "source/lesson01"

    def page_url(self, path: str) -> str:
        """The address that opens `path` in a fresh JupyterLab workspace."""
        return f"{self.url}lab/tree/{path}?reset&token={self.token}"

    def shut_down_kernels(self) -> None:
        """End every session the server runs, so the next notebook starts alone."""
        headers = {"Authorization": f"token {self.token}"}
        for session in requests.get(f"{self.url}api/sessions", headers=headers, timeout=10).json():
            requests.delete(f"{self.url}api/sessions/{session['id']}", headers=headers, timeout=30)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright until the block ends."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(root: Path, namespace: str = "default", *, timeout: float = 90) -> Iterator[LabServer]:
    """`jupyter lab` serving `root` from this checkout's environment until the block ends.

    Its kernels work on the practice cluster in `namespace`; it runs in `root`, so nbgrader's
    formgrader finds a course there.
    """
    token, port = secrets.token_hex(16), free_port()
    state = root.parent / f".jupyter-{port}"
    log = state / "server.log"
    state.mkdir(parents=True, exist_ok=True)
    _no_news(state / "settings")
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.allow_root=True",
        "--MappingKernelManager.transport_encryption=auto",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
    ]
    scripts = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "LAB_CLUSTER": "practice",
        "LAB_NAMESPACE": namespace,
        "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}",
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(
        f"http://127.0.0.1:{port}/", token, namespace, "this checkout", _host_namespace_phase
    )
    try:
        if not poll(lambda: _answers(server, process), bool, timeout, interval=0.5):
            raise RuntimeError(
                f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
            )
        logger.info("jupyter lab serving %s at %s (log %s)", root, server.url, log)
        yield server
    finally:
        _stop(process)


@contextmanager
def serve_image(namespace: str, tag: str = hostedimage.HOSTED_TAG) -> Iterator[LabServer]:
    """JupyterLab of the hosted image, as Binder runs it (its user, no added rights).

    Its kernels work in `namespace` on the practice cluster inside the container, which is ready
    before the block starts.
    """
    command = [
        "jupyter",
        "lab",
        "--ip=0.0.0.0",
        "--port=8888",
        "--no-browser",
        "--LabApp.expose_app_in_browser=True",
    ]
    with hostedimage.running(tag, command=command, environment={"LAB_NAMESPACE": namespace}) as lab:
        lab.exec(
            "python",
            "-c",
            f"import json, pathlib; folder = pathlib.Path({str(NEWS_SETTINGS)!r}).expanduser(); "
            "folder.parent.mkdir(parents=True, exist_ok=True); "
            f"folder.write_text(json.dumps({NO_NEWS!r}))",
        )
        lab.cluster_up()

        def phase(name: str) -> str:
            return lab.exec(
                "kubectl", "get", "namespace", name, "-o", "jsonpath={.status.phase}"
            ).strip()

        yield LabServer(f"{lab.url}/", lab.token, namespace, f"the hosted image {tag}", phase)


def _host_namespace_phase(name: str) -> str:
    return connect("practice", namespace="default").core.read_namespace(name).status.phase


def _stop(process: subprocess.Popen) -> None:
    """End the server (it shuts its kernels down on SIGTERM), and what else runs in its session."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _no_news(settings: Path) -> None:
    """JupyterLab's news toast covers the notebook: answer no in the user's settings."""
    path = settings / NEWS_SETTINGS.relative_to(USER_SETTINGS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(NO_NEWS))


def _answers(server: LabServer, process: subprocess.Popen) -> bool:
    """Whether the server's /api/status answers; a server that exited raises."""
    if process.poll() is not None:
        raise RuntimeError(f"jupyter lab exited with {process.returncode}")
    try:
        return requests.get(f"{server.url}api/status", params={"token": server.token}, timeout=2).ok
    except requests.ConnectionError:
        return False


def copy_course(target: Path) -> Path:
    """Student notebooks and solved masters in a throwaway root: runs write nothing here."""
    shutil.copytree(
        REPO_ROOT / "notebooks", target / "notebooks", ignore=shutil.ignore_patterns("ml-api")
    )
    shutil.copytree(
        REPO_ROOT / "source" / "lesson01",
        target / "source" / "lesson01",
        ignore=shutil.ignore_patterns("ml-api"),
    )
    return target


@dataclass
class Screenshots:
    """Numbered screenshots of one test, kept under artifacts/screenshots/<test>/."""

    folder: Path
    taken: list[Path] = field(default_factory=list)

    def take(self, page: Page, step: str) -> Path:
        """Save the page as it is now, named by the order of the step and the step."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = (
            self.folder / f"{len(self.taken) + 1:02d}-{re.sub(r'[^A-Za-z0-9.-]+', '-', step)}.png"
        )
        page.screenshot(path=str(path), full_page=False)
        self.taken.append(path)
        return path


class CellFailed(AssertionError):
    """A cell showed an error or did not finish; the message names notebook, cell and screenshot."""


@dataclass
class OpenNotebook:
    """One notebook open in JupyterLab: run its cells by index and read what they showed."""

    page: Page
    name: str
    shots: Screenshots

    @property
    def sources(self) -> list[tuple[str, str]]:
        """(cell type, source) of every cell, as the notebook model holds them."""
        return [
            tuple(pair)
            for pair in self.page.evaluate(
                "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => "
                "[c.model.type, c.model.sharedModel.getSource()])"
            )
        ]

    def code_cells(self) -> list[int]:
        """Indices of the code cells, in order."""
        return [index for index, (kind, _) in enumerate(self.sources) if kind == "code"]

    def start(self, index: int) -> None:
        """Start running cell `index` and return at once."""
        self.page.evaluate(START_CELL, index)

    def done(self, index: int) -> bool:
        """Whether cell `index`, once started, has ended."""
        return self.page.evaluate(CELL_DONE, index)

    def finish(self, index: int, timeout: float = 180) -> list[dict]:
        """Wait for cell `index` to end; its outputs, or CellFailed naming it and what it showed."""
        try:
            self.page.wait_for_function(CELL_DONE, arg=index, timeout=timeout * 1000, polling=200)
        except PlaywrightTimeout:
            raise self._failure(index, f"did not finish within {timeout:.0f} s") from None
        outputs = self.page.evaluate(CELL_OUTPUTS, index)
        shown = [f"{o['ename']}: {o['evalue']}" for o in outputs if o.get("output_type") == "error"]
        ended = self.page.evaluate("index => window.labCells[index]", index)
        if shown or not ended["ok"]:
            raise self._failure(
                index, "; ".join(shown) or ended.get("error") or "the run was refused"
            )
        return outputs

    def run(self, index: int, timeout: float = 180) -> list[dict]:
        """Run cell `index` to its end; its outputs."""
        self.start(index)
        return self.finish(index, timeout)

    def shot(self, index: int, what: str) -> Path:
        """A screenshot with cell `index` scrolled into view, named by notebook, cell and `what`."""
        self.page.evaluate(
            "index => window.jupyterapp.shell.currentWidget.content.widgets[index].node"
            ".scrollIntoView({block: 'center'})",
            index,
        )
        return self.shots.take(self.page, f"{self.name}-cell-{index}-{what}")

    def _failure(self, index: int, what: str) -> CellFailed:
        """CellFailed for cell `index`, with a screenshot of the page as it failed."""
        shot = self.shot(index, "FAILED")
        first_line = self.sources[index][1].strip().splitlines()[0][:100]
        return CellFailed(f"{self.name} cell {index} ({first_line!r}): {what} (screenshot {shot})")


def open_notebook(
    page: Page, server: LabServer, path: str, shots: Screenshots, timeout: float = 90
) -> OpenNotebook:
    """Open `path` in JupyterLab, wait until its kernel is idle; a dialog shown fails the test."""
    name = Path(path).stem
    page.goto(server.page_url(path), wait_until="domcontentloaded")
    try:
        page.wait_for_function(KERNEL_IDLE, timeout=timeout * 1000, polling=250)
    except PlaywrightTimeout:
        shot = shots.take(page, f"{name}-did-not-open")
        raise CellFailed(
            f"{name}: JupyterLab did not open it with an idle kernel within {timeout:.0f} s "
            f"(screenshot {shot})"
        ) from None
    dialogs = page.locator(".jp-Dialog").all_inner_texts()
    if dialogs:
        raise CellFailed(f"{name}: JupyterLab showed a dialog on opening: {dialogs}")
    return OpenNotebook(page, name, shots)


def text_of(outputs: list[dict]) -> str:
    """Everything the outputs say as text: streams and plain-text results."""
    parts = [
        o.get("text", "")
        if o.get("output_type") == "stream"
        else o.get("data", {}).get("text/plain", "")
        for o in outputs
    ]
    return "".join("".join(part) if isinstance(part, list) else part for part in parts)
