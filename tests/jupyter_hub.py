"""A classroom's JupyterHub in headless Chromium.

Log in as a hub user, use nbgrader's Assignments tab, run code in the user's own server, read what
the masters hold that a student must never read.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Collection

import nbformat
from playwright.sync_api import Page

from autograder import REPO_ROOT
from autograder.classroom.layout import ASSIGNMENT, Classroom
from autograder.shared import studentfiles
from jupyter_browser import Screenshots

MASTERS = REPO_ROOT / "source" / ASSIGNMENT
HIDDEN_TESTS = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.DOTALL)
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.DOTALL)
SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*(\n|\Z)", re.MULTILINE)
LONG_ENOUGH = 30  # characters: a line this long from a master is found nowhere by chance
SERVER_READY = 240_000  # ms: log-in, spawn and JupyterLab's first load on a busy machine
# The Assignments tabs open now closed, so the next one is the only one (its
# sections have fixed ids).
CLOSE_ASSIGNMENTS = """() => {
  for (const widget of Array.from(window.jupyterapp.shell.widgets('main')))
    if (widget.title.label === 'Assignments') widget.close(); }"""
# The released section lists something, or says it has nothing, and is not loading.
LISTED = """() => { const list = document.getElementById('released_assignments_list');
  return Boolean(list)
    && [...list.children].some(c => !c.hidden && !c.classList.contains('list_loading')); }"""
# Run code in a fresh kernel of the user's own server, through JupyterLab's services; its stdout.
RUN_IN_KERNEL = """async code => {
  const kernel = await window.jupyterapp.serviceManager.kernels.startNew({name: 'python3'});
  let out = '';
  const future = kernel.requestExecute({code, store_history: false});
  future.onIOPub = message => {
    if (message.header.msg_type === 'stream') out += message.content.text;
    if (message.header.msg_type === 'error')
      out += message.content.ename + ': ' + message.content.evalue;
  };
  await future.done;
  await kernel.shutdown();
  return out;
}"""
# Every file of the server's filesystem that holds one of the needles (hex-encoded, so the code that
# searches holds none of them itself), with the needles it holds, as JSON: grep reads the whole tree
# but /proc, /sys and /dev.
SEARCH = """import binascii, json, os, subprocess
needles = [binascii.unhexlify(h) for h in {hexed!r}]
tops = [os.path.join("/", name) for name in os.listdir("/") if name not in ("proc", "sys", "dev")]
patterns = [argument for needle in needles for argument in ("-e", needle.decode())]
listed = subprocess.run(["grep", "-rlFsZ", *patterns, *tops], capture_output=True).stdout
found = [path.decode() for path in listed.split(b"\\0") if path]
held = {{}}
for path in found:
    # Names may hold spaces (feedback folders): grep ends each with NUL.
    with open(path, "rb") as file:
        data = file.read()
    held[path] = [index for index, needle in enumerate(needles) if needle in data]
print(json.dumps(held))"""


def _given() -> str:
    """What students are given: the released notebooks' cells and the lab runtime's Python files."""
    return "\n".join(
        [
            *(
                cell.source
                for path in (REPO_ROOT / "notebooks").glob("*.ipynb")
                for cell in nbformat.read(path, 4).cells
            ),
            *(
                source.read_text()
                for source in studentfiles.chosen(REPO_ROOT).values()
                if source.suffix == ".py"
            ),
        ]
    )


def master_lines(pattern: re.Pattern[str]) -> list[str]:
    """The masters' lines in `pattern`'s regions (hidden tests, solutions) students are not given.

    No released notebook's cell and no file of the lab runtime (shared/studentfiles.py) holds them.
    """
    lines = {
        line.strip()
        for path in sorted(MASTERS.glob("*.ipynb"))
        for cell in nbformat.read(path, 4).cells
        for region in pattern.findall(cell.source)
        for line in region.splitlines()
    }
    given = _given()
    return sorted(line for line in lines if len(line) >= LONG_ENOUGH and line not in given)


def course_lines() -> list[str]:
    """The lines of the package's course room (steps done for the student, the hidden tests'
    references) that students are not given, but imports (other packages hold the same)."""
    lines = {
        line.strip()
        for path in sorted((REPO_ROOT / "autograder" / "course").glob("*.py"))
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith(("import ", "from "))
    }
    given = _given()
    return sorted(line for line in lines if len(line) >= LONG_ENOUGH and line not in given)


def solved_sources(notebook: str, grade_ids: Collection[str] | None = None) -> dict[int, str]:
    """The master's solution cells of one notebook (those of `grade_ids` only, when given), by
    index, with nbgrader's markers removed."""
    cells = nbformat.read(MASTERS / f"{notebook}.ipynb", 4).cells
    return {
        index: SOLUTION_MARKER.sub("", cell.source)
        for index, cell in enumerate(cells)
        if cell.metadata.get("nbgrader", {}).get("solution")
        and cell.cell_type == "code"
        and (grade_ids is None or cell.metadata["nbgrader"].get("grade_id") in grade_ids)
    }


def cell_index(notebook: str, grade_id: str) -> int:
    """Where the master's cell `grade_id` is in one notebook (the release keeps their order)."""
    cells = nbformat.read(MASTERS / f"{notebook}.ipynb", 4).cells
    ids = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in cells]
    return ids.index(grade_id)


def log_in(page: Page, room: Classroom, user: str, password: str) -> None:
    """The hub's log-in form, then the wait for the user's JupyterLab (spawn page: progress)."""
    page.goto(f"{room.url}hub/login", wait_until="domcontentloaded")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=SERVER_READY)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.started", timeout=SERVER_READY
    )


def open_assignments(page: Page, shots: Screenshots, who: str) -> None:
    """nbgrader's Assignments tab, opened afresh from its menu as a student does, once listed."""
    page.evaluate(CLOSE_ASSIGNMENTS)
    page.get_by_text("Nbgrader", exact=True).click()
    page.get_by_text("Assignment List", exact=True).click()
    page.wait_for_function(LISTED, timeout=120_000)
    shots.take(page, f"{who}-assignments")


def click_in_row(page: Page, section: str, label: str, timeout: float = 120_000) -> None:
    """Press `label` in lesson01's row of an Assignments tab section (released, fetched...)."""
    page.locator(f"#{section}_assignments_list").get_by_role("button", name=label).click(
        timeout=timeout
    )


def wait_in_section(
    page: Page, section: str, text: str = ASSIGNMENT, timeout: float = 120_000
) -> str:
    """The text of a section once it lists `text`."""
    listing = page.locator(f"#{section}_assignments_list")
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).innerText.includes(text)",
        arg=[f"{section}_assignments_list", text],
        timeout=timeout,
    )
    return listing.inner_text()


def run_in_server(page: Page, code: str) -> str:
    """Run `code` in a new kernel of the logged-in user's server; what it printed."""
    return page.evaluate(RUN_IN_KERNEL, code)


def search_code(needles: list[str]) -> str:
    """Python code that prints, as JSON, the files of its filesystem that hold any of `needles`."""
    return SEARCH.format(hexed=[binascii.hexlify(needle.encode()).decode() for needle in needles])


def readable_files_holding(page: Page, needles: list[str]) -> dict[str, list[str]]:
    """The files of the user's server's whole filesystem holding any of `needles`, and which."""
    return files_holding(run_in_server(page, search_code(needles)), needles)


def files_holding(printed: str, needles: list[str]) -> dict[str, list[str]]:
    """What search_code's run printed: each file found, with the needles it holds."""
    try:
        held = json.loads(printed.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AssertionError(
            f"the search did not run in the student's server: {printed[-1000:]!r}"
        ) from None
    return {path: [needles[index] for index in indices] for path, indices in held.items()}


def set_cell_sources(page: Page, sources: dict[int, str]) -> None:
    """Type the answers into the open notebook's cells (through its model, as the editor does)."""
    page.evaluate(
        """sources => {
      const cells = window.jupyterapp.shell.currentWidget.content.widgets;
      for (const [index, text] of Object.entries(sources))
        cells[Number(index)].model.sharedModel.setSource(text);
    }""",
        {str(index): text for index, text in sources.items()},
    )
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
