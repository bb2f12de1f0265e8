"""The notebooks as a student and an instructor meet them.

Real JupyterLab in headless Chromium, on the practice cluster. Screenshots of every step go to
artifacts/screenshots/<test>/; a failing cell is named with its notebook.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from autograder.grading.classrun.ledger import Outcome
from jupyter_browser import (
    SCREENSHOTS,
    VIEWPORT,
    LabServer,
    OpenNotebook,
    Screenshots,
    chromium,
    copy_course,
    open_notebook,
    serve,
    serve_image,
    text_of,
)
from test_notebooks import clean_up_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.browser]

NOTEBOOK_04 = "04-first-deployment"
NOTEBOOK_05 = "05-scale-update-rollback"
ROLLOUT_WAIT = 'workloads.wait_for_rollout(lab, "ml-api")'
ROLLOUT_CHART = "observe.watch_rollout("
# Records every text the cell's output area shows while it holds an ipywidgets
# progress bar (tqdm.auto's).
RECORD_PROGRESS = """index => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index].node;
  window.labProgress = [];
  new MutationObserver(() => {
    const output = cell.querySelector('.jp-OutputArea');
    if (output && cell.querySelector('.widget-hprogress')) {
      const text = output.innerText.replaceAll('\\u2007', ' ');
      if (window.labProgress[window.labProgress.length - 1] !== text) window.labProgress.push(text);
    }
  }).observe(cell, {subtree: true, childList: true, characterData: true, attributes: true});
}"""
SELF_CHECK = re.compile(r"^print\((handson|checks)\.", re.MULTILINE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser tab whose uncaught page errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JupyterLab's page raised: {errors}"


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    """This test's screenshot folder, emptied of an earlier run's."""
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9.-]+", "-", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    return Screenshots(folder)


@pytest.fixture(params=["checkout", pytest.param("image", marks=pytest.mark.docker)])
def jupyter_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabServer]:
    """JupyterLab served from this checkout or the hosted image; kernels in their own namespace.

    From the checkout its kernels work on the host's practice cluster; from the hosted image, on the
    practice cluster inside the container.
    """
    namespace = f"browser-{uuid.uuid4().hex[:6]}"
    if request.param == "image":
        with serve_image(namespace) as server:
            yield server
        return
    request.getfixturevalue("practice_cluster")
    with serve(copy_course(tmp_path / "lab"), namespace) as server:
        yield server
    clean_up_namespace(
        namespace
    )  # and ml-api:v1 and v2 served again: notebooks 4 and 5 loaded their own app


def _first_cells(notebook: OpenNotebook) -> list[int]:
    """The code cells up to the one connecting to the cluster, or the first if none does."""
    cells = notebook.code_cells()
    sources = notebook.sources
    connecting = [index for index in cells if "connect(" in sources[index][1]]
    return cells[: cells.index(connecting[0]) + 1] if connecting else cells[:1]


def test_each_student_notebook_opens_runs_its_first_cells_and_connects(
    jupyter_lab: LabServer, page: Page, shots: Screenshots
) -> None:
    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb")):
        notebook = open_notebook(page, jupyter_lab, f"{jupyter_lab.students}/{path.name}", shots)
        shots.take(page, f"{notebook.name}-opened")
        for index in _first_cells(notebook):
            notebook.run(index)
        notebook.shot(_first_cells(notebook)[-1], "first-cells")
        jupyter_lab.shut_down_kernels()
    phase = jupyter_lab.namespace_phase(jupyter_lab.namespace)
    assert phase == "Active", f"connect() in the notebooks left their namespace {phase!r}"


def _self_check(notebook: OpenNotebook, index: int, outputs: list[dict]) -> None:
    """A self-check cell prints PASS lines only."""
    said = [line for line in text_of(outputs).splitlines() if line.startswith(("PASS", "FAIL"))]
    assert said and all(line.startswith("PASS") for line in said), (
        f"{notebook.name} cell {index}: the self-check printed {text_of(outputs)[:400]!r}"
    )


def _run_with_progress(notebook: OpenNotebook, index: int) -> tuple[list[dict], list[str]]:
    """Run the cell that waits for the rollout.

    Every text its progress bar widget showed while it ran.

    The page records each change itself: a rollout of fast pods can be over between two looks from
    here.
    """
    notebook.page.evaluate(RECORD_PROGRESS, index)
    notebook.start(index)
    shot = False
    while not notebook.done(index):
        if not shot and len(notebook.page.evaluate("() => window.labProgress")) >= 2:
            notebook.shot(
                index, "rollout-progress"
            )  # the bar once it knows how many replicas it waits for
            shot = True
        time.sleep(0.1)
    outputs = notebook.finish(index)
    if not shot:
        notebook.shot(index, "rollout-done")
    return outputs, notebook.page.evaluate("() => window.labProgress")


def _run_notebook_04(notebook: OpenNotebook) -> list[str]:
    """Every code cell of the solved 04, checking self-checks and rollout progress; its text."""
    progress = []
    for index in notebook.code_cells():
        source = notebook.sources[index][1]
        if ROLLOUT_WAIT in source:
            outputs, shown = _run_with_progress(notebook, index)
            progress.extend(shown)
        else:
            outputs = notebook.run(index)
        if SELF_CHECK.search(source):
            _self_check(notebook, index, outputs)
            notebook.shot(index, "self-check")
        elif "passed" in text_of(outputs):
            notebook.shot(index, "exercise")
    return progress


def test_notebook_04_hands_on_runs_in_the_browser_and_05_draws_the_rollout(
    jupyter_lab: LabServer, page: Page, shots: Screenshots, capsys: pytest.CaptureFixture
) -> None:
    started = time.monotonic()
    notebook = open_notebook(page, jupyter_lab, f"{jupyter_lab.masters}/{NOTEBOOK_04}.ipynb", shots)
    opened = time.monotonic() - started
    progress = _run_notebook_04(notebook)
    seconds_04 = time.monotonic() - started
    assert any(re.search(r"rollout ml-api: .*\d/3", text, re.DOTALL) for text in progress), (
        f"{NOTEBOOK_04}: no progress bar counted the rollout's 3 replicas while it "
        f"ran (it showed {progress!r})"
    )
    shots.take(page, f"{NOTEBOOK_04}-done")
    jupyter_lab.shut_down_kernels()

    started = time.monotonic()
    notebook = open_notebook(page, jupyter_lab, f"{jupyter_lab.masters}/{NOTEBOOK_05}.ipynb", shots)
    chart = next(
        index for index in notebook.code_cells() if ROLLOUT_CHART in notebook.sources[index][1]
    )
    for index in notebook.code_cells():
        outputs = notebook.run(index)
        if index == chart:
            break
    seconds_05 = time.monotonic() - started
    assert any("image/png" in output.get("data", {}) for output in outputs), (
        f"{NOTEBOOK_05} cell {chart}: the rollout chart is not a PNG ({text_of(outputs)[:300]!r})"
    )
    image = page.locator(".jp-Notebook .jp-Cell").nth(chart).locator(".jp-RenderedImage img").first
    assert image.evaluate("img => img.complete && img.naturalWidth > 0"), (
        f"{NOTEBOOK_05} cell {chart}: the rollout chart did not render as an image"
    )
    notebook.shot(chart, "rollout-chart")
    jupyter_lab.shut_down_kernels()
    with capsys.disabled():
        print(
            f"\n[browser] {NOTEBOOK_04} (solved master) in JupyterLab from {jupyter_lab.where}: "
            f"{seconds_04:.1f} s, of which opening with an idle kernel {opened:.1f} s; "
            f"{NOTEBOOK_05} to its rollout chart: {seconds_05:.1f} s; screenshots in {shots.folder}"
        )


def test_formgrader_lists_lesson01_with_the_autograded_scores(
    graded_course: Callable[[str, Collection[str]], tuple[Path, list[Outcome]]],
    practice_cluster,
    page: Page,
    shots: Screenshots,
) -> None:
    root, outcomes = graded_course("practice", ("untouched", "first-notebook-only"))
    scores = {o.student: o.score for o in outcomes}
    assert scores["untouched"] == 0 < scores["first-notebook-only"], scores
    with serve(root) as server:
        page.goto(f"{server.url}formgrader/manage_assignments?token={server.token}")
        page.locator("table tr", has_text="lesson01").first.wait_for(timeout=30_000)
        shots.take(page, "formgrader-assignments")
        page.goto(f"{server.url}formgrader/manage_submissions/lesson01")
        for outcome in outcomes:
            row = page.locator("table tr", has_text=outcome.student).first
            row.wait_for(timeout=30_000)
            shown = row.locator(".score").inner_text().strip()
            assert shown == f"{outcome.score:g} / {outcome.max_score:g}", (
                f"formgrader shows {shown!r} for {outcome.student}, graded "
                f"{outcome.score} of {outcome.max_score}"
            )
        shots.take(page, "formgrader-lesson01-submissions")
