"""The classroom on a real JupyterHub: two students log in, fetch lesson01 through nbgrader's
exchange, one solves notebook 01 and part of 04 (on their own practice cluster) and submits, the
other submits it blank; the instructor collects, grades on the cluster and releases feedback; both
fetch it and see their scores; a refused submission shows why in the Assignments tab.
Screenshots: artifacts/screenshots/<test>/."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml
from kubernetes import client
from nbgrader.api import Gradebook
from playwright.sync_api import Browser, Page

import autograder
from autograder.classroom import hub, setup
from autograder.classroom.layout import ASSIGNMENT, COURSE_ID, Classroom
from autograder.grading.classrun.course import Course, scores
from autograder.shared.errors import LabError
from autograder.shared.ports import free_ports
from jupyter_browser import (
    KERNEL_IDLE,
    SCREENSHOTS,
    VIEWPORT,
    OpenNotebook,
    Screenshots,
    chromium,
    text_of,
)
from jupyter_hub import (
    HIDDEN_TESTS,
    SOLUTION,
    cell_index,
    click_in_row,
    course_lines,
    files_holding,
    log_in,
    master_lines,
    open_assignments,
    readable_files_holding,
    search_code,
    set_cell_sources,
    solved_sources,
    wait_in_section,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path("/srv/k8s-ml-classroom-test")
INSTRUCTOR = "k8sml-t-teacher"
SOLVER, BLANK, LATE = "k8sml-t-ada", "k8sml-t-bo", "k8sml-t-cy"
NOTEBOOK_01 = "01-why-orchestration"
NOTEBOOK_04 = "04-first-deployment"
# Part of 04 as a student types it: the app, its test client, the Dockerfile, the Deployment's
# manifest, `kubectl apply -f ml-api/deployment.yaml` and `kubectl get`; exercises 4.1 and 4.2 pass,
# 4.3 and 4.4 are not done.
TYPED_04 = (
    "write-app",
    "test-client",
    "write-dockerfile",
    "write-deployment",
    "apply-deployment",
    "list-deployment",
)
DONE_04 = ("test-test-client", "test-apply-deployment")
RUNTIME_LINE = (
    "def connect(name: str | None = None, namespace: str | None = None) -> Lab:"  # lab/cluster.py
)
KWOK_KUBECONFIG = ".kwok/clusters/ml-learning/kubeconfig.yaml"  # kwokctl's, in the student's home


def _expose_app(room: Classroom) -> None:
    """The tests drive JupyterLab through window.jupyterapp: its page config says to expose it."""
    for role in ("student", "instructor"):
        page_config = room.config(role) / "labconfig" / "page_config.json"
        page_config.parent.mkdir(parents=True, exist_ok=True)
        settings = json.loads(page_config.read_text()) if page_config.exists() else {}
        page_config.write_text(json.dumps({**settings, "exposeAppInBrowser": True}))
        page_config.parent.chmod(0o755)
        page_config.chmod(0o644)


def _remove_users(room: Classroom) -> None:
    for user in (room.instructor, *room.students):
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)
        subprocess.run(["userdel", "--remove", user], check=False, capture_output=True)


@pytest.fixture(scope="module")
def classroom() -> Iterator[tuple[Classroom, dict[str, str]]]:
    """A class of three students and an instructor (Unix users made for it), its hub on loopback."""
    room = Classroom(ROOT, INSTRUCTOR, (SOLVER, BLANK, LATE), *free_ports(3))
    if ROOT.exists():  # an earlier run that was killed
        hub.stop(Classroom.load(ROOT))
        _remove_users(Classroom.load(ROOT))
        shutil.rmtree(ROOT)
    passwords = setup.up(room)
    _expose_app(room)
    hub.start(room)
    yield room, passwords
    hub.stop(room)
    _remove_users(room)
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9.-]+", "-", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    return Screenshots(folder)


def _session(browser: Browser, room: Classroom, passwords: dict[str, str], user: str) -> Page:
    """A browser of its own for `user`, logged in to the hub, in their JupyterLab."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    log_in(page, room, user, passwords[user])
    return page


def _open_release(
    page: Page, room: Classroom, user: str, shots: Screenshots, notebook: str
) -> OpenNotebook:
    """A notebook of the fetched assignment, open with an idle kernel."""
    page.goto(
        f"{room.url}user/{user}/lab/tree/{ASSIGNMENT}/{notebook}.ipynb?reset",
        wait_until="domcontentloaded",
    )
    page.wait_for_function(KERNEL_IDLE, timeout=180_000, polling=250)
    return OpenNotebook(page, f"{user}-{notebook}", shots)


def _solve(notebook: OpenNotebook, typed: dict[int, str], last: int | None = None) -> list[str]:
    """Type the `typed` answers, run the code cells (up to cell `last`), save; the exercises that
    passed."""
    set_cell_sources(notebook.page, typed)
    passed = []
    for index in notebook.code_cells():
        if last is not None and index > last:
            break
        said = text_of(notebook.run(index))
        passed += re.findall(r"Exercise [\d.]+ passed", said)
        if "passed" in said:
            notebook.shot(index, "passed")
    notebook.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    return passed


def _fetch_and_open_assignments(page: Page, who: str, shots: Screenshots) -> None:
    open_assignments(page, shots, who)
    click_in_row(page, "released", "Fetch")
    wait_in_section(page, "fetched")
    shots.take(page, f"{who}-fetched")


def _submit(page: Page, who: str, shots: Screenshots) -> None:
    open_assignments(page, shots, who)
    click_in_row(page, "fetched", "Submit")
    wait_in_section(page, "submitted")
    shots.take(page, f"{who}-submitted")


def _collect_and_grade(room: Classroom) -> None:
    """The instructor's nbgrader collect, then `classroom grade` as root, as the hub's steps say."""
    setup.as_instructor(room, "nbgrader", "collect", ASSIGNMENT)
    command = [sys.executable, "-m", "autograder", "classroom", "grade", "--root", str(room.root)]
    graded = subprocess.run(command, capture_output=True, text=True, check=False)
    assert graded.returncode == 0, (
        f"classroom grade failed:\n{graded.stdout[-3000:]}{graded.stderr[-3000:]}"
    )


def _feedback_scores(page: Page, room: Classroom, user: str, shots: Screenshots) -> list[str]:
    """Fetch Feedback in the Assignments tab, open notebooks 01's and 04's feedback pages; the
    scores they show."""
    open_assignments(page, shots, user)
    click_in_row(page, "submitted", "Fetch Feedback")
    page.locator("#submitted_assignments_list").get_by_text("view feedback").first.wait_for(
        timeout=120_000
    )
    shots.take(page, f"{user}-feedback-fetched")
    folder = next((Path(f"/home/{user}") / ASSIGNMENT / "feedback").iterdir())
    shown = []
    for notebook in (NOTEBOOK_01, NOTEBOOK_04):
        page.goto(
            f"{room.url}user/{user}/files/{ASSIGNMENT}/feedback/{folder.name}/{notebook}.html"
        )
        shots.take(page, f"{user}-feedback-{notebook}")
        header = page.locator("body").inner_text()
        found = re.search(r"Score:\s*([\d.]+\s*/\s*[\d.]+)", header)
        assert found, f"{user}'s feedback for {notebook} shows no score: {header[:500]!r}"
        shown.append(re.sub(r"\s+", "", found.group(1)))
    return shown


def _graded_errors(room: Classroom, student: str, notebook: str) -> list[str]:
    """The errors a student's autograded notebook shows: why a step scored less than it should."""
    path = room.course / "autograded" / student / ASSIGNMENT / f"{notebook}.ipynb"
    return [
        f"cell {index}: {output.ename}: {output.evalue[:300]}"
        for index, cell in enumerate(nbformat.read(path, 4).cells)
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def _points(steps: dict[str, list[float]], notebook: str) -> dict[str, list[float]]:
    """The [score, most] of each graded step of one notebook, by grade id."""
    return {
        step.split("/", 1)[1]: points
        for step, points in steps.items()
        if step.startswith(f"{notebook}/")
    }


def test_two_students_fetch_submit_and_read_their_feedback_after_grading(
    classroom: tuple[Classroom, dict[str, str]],
    practice_cluster,
    browser: Browser,
    shots: Screenshots,
    capsys: pytest.CaptureFixture,
) -> None:
    room, passwords = classroom
    setup.as_instructor(room, "nbgrader", "release_assignment", ASSIGNMENT, "--force")

    started = time.monotonic()
    solver = _session(browser, room, passwords, SOLVER)
    logged_in = time.monotonic() - started
    _fetch_and_open_assignments(solver, SOLVER, shots)
    notebook = _open_release(solver, room, SOLVER, shots, NOTEBOOK_01)
    passed = _solve(notebook, solved_sources(NOTEBOOK_01))
    assert passed == ["Exercise 1.1 passed", "Exercise 1.2 passed", "Exercise 1.3 passed"], passed
    started_04 = time.monotonic()
    notebook = _open_release(solver, room, SOLVER, shots, NOTEBOOK_04)
    typed = solved_sources(NOTEBOOK_04, TYPED_04)
    passed = _solve(notebook, typed, last=cell_index(NOTEBOOK_04, DONE_04[-1]))
    assert passed == ["Exercise 4.1 passed", "Exercise 4.2 passed"], passed
    seconds_04 = time.monotonic() - started_04
    _submit(solver, SOLVER, shots)

    blank = _session(browser, room, passwords, BLANK)
    _fetch_and_open_assignments(blank, BLANK, shots)
    _submit(blank, BLANK, shots)

    _collect_and_grade(room)
    setup.as_instructor(room, "nbgrader", "generate_feedback", ASSIGNMENT, "--force")
    setup.as_instructor(room, "nbgrader", "release_feedback", ASSIGNMENT)

    course = Course(room.course)
    solved, untouched = (scores(course, ASSIGNMENT, student) for student in (SOLVER, BLANK))
    points_01, points_04 = (_points(solved.steps, name) for name in (NOTEBOOK_01, NOTEBOOK_04))
    assert points_01 and all(got == most for got, most in points_01.values()), points_01
    done_04 = {step: points for step, points in points_04.items() if step in DONE_04}
    assert set(done_04) == set(DONE_04), points_04
    assert all(got == most for got, most in done_04.values()), (
        points_04,
        _graded_errors(room, SOLVER, NOTEBOOK_04),
    )
    full_01, part_04, full_04 = (
        sum(most for _, most in points.values()) for points in (points_01, done_04, points_04)
    )
    assert solved.score == full_01 + part_04, (solved.score, solved.steps)
    assert untouched.score == 0, untouched

    solver_sees, blank_sees = (
        _feedback_scores(page, room, user, shots)
        for page, user in ((solver, SOLVER), (blank, BLANK))
    )
    teacher = _session(browser, room, passwords, INSTRUCTOR)
    teacher.goto(f"{room.url}user/{INSTRUCTOR}/formgrader")
    teacher.locator("table").get_by_text(ASSIGNMENT, exact=True).first.wait_for(timeout=120_000)
    shots.take(teacher, f"{INSTRUCTOR}-formgrader")
    assert solver_sees == [f"{full_01:.1f}/{full_01:.1f}", f"{part_04:.1f}/{full_04:.1f}"], (
        solver_sees
    )
    assert blank_sees == [f"0.0/{full_01:.1f}", f"0.0/{full_04:.1f}"], blank_sees
    with capsys.disabled():
        print(
            f"\n[classroom] {SOLVER}: log-in to JupyterLab {logged_in:.1f} s; part of "
            f"{NOTEBOOK_04} typed and run on their own cluster in {seconds_04:.0f} s; scores "
            f"{solved.score}/"
            f"{solved.max_score} ({SOLVER}), {untouched.score}/{untouched.max_score} ({BLANK}); "
            f"feedback pages show {solver_sees} and {blank_sees}; screenshots in {shots.folder}"
        )


@pytest.fixture(scope="module")
def found_in_a_students_server(
    classroom: tuple[Classroom, dict[str, str]], browser: Browser
) -> dict[str, list[str]]:
    """One search of a student's whole filesystem, from a kernel of their server.

    It looks for the masters' hidden tests and solutions and, as a control, a line of the lab
    runtime the server must hold.
    """
    room, passwords = classroom
    page = _session(browser, room, passwords, BLANK)
    return readable_files_holding(
        page, [*master_lines(HIDDEN_TESTS), *master_lines(SOLUTION), RUNTIME_LINE]
    )


def test_a_students_server_reads_no_hidden_test_of_the_masters(
    classroom: tuple[Classroom, dict[str, str]], found_in_a_students_server: dict[str, list[str]]
) -> None:
    room, _ = classroom
    runtime = [path for path, held in found_in_a_students_server.items() if RUNTIME_LINE in held]
    assert any(path.startswith(str(room.runtime)) for path in runtime), (
        "the search missed the lab runtime"
    )
    hidden = set(master_lines(HIDDEN_TESTS))
    assert len(hidden) > 50
    leaks = {
        path: held for path, held in found_in_a_students_server.items() if hidden.intersection(held)
    }
    assert not leaks, f"the student's server can read hidden tests: {leaks}"


def test_a_students_server_reads_no_solution_of_the_masters(
    found_in_a_students_server: dict[str, list[str]],
) -> None:
    solutions = set(master_lines(SOLUTION))
    leaks = {
        path: held
        for path, held in found_in_a_students_server.items()
        if solutions.intersection(held)
    }
    assert not leaks, f"the student's server can read the masters' solutions: {leaks}"


def _installed_hub(folder: Path) -> Path:
    """A Python environment holding this package as `pip install .` puts it (a copy, not
    editable), reading this test's environment's packages through a .pth: a hub installed from PyPI;
    its python."""
    base_python = Path(sys.base_prefix) / "bin" / "python3"  # kept in a student's view, unlike ours
    subprocess.run([base_python, "-m", "venv", "--without-pip", folder], check=True)
    python = folder / "bin" / "python3"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    asked = subprocess.run([python, "-c", purelib], capture_output=True, text=True, check=True)
    site = Path(asked.stdout.strip())
    (site / "hub-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    package = Path(autograder.__file__).parent
    shutil.copytree(package, site / "autograder", ignore=shutil.ignore_patterns("__pycache__"))
    return python


def test_a_students_server_reads_no_course_file_of_a_hub_installed_from_a_wheel(
    classroom: tuple[Classroom, dict[str, str]],
) -> None:
    """The hub's environment is kept readable in a student's view (their server runs from it);
    where the package is installed there, not editable, its course/ and grading/ are in it."""
    room, _ = classroom
    python = _installed_hub(room.root / "installed-hub")
    needles = [*course_lines(), *master_lines(SOLUTION), RUNTIME_LINE]
    spawn = (
        "import json, pathlib, sys; from autograder.classroom import layout, roles; "
        f"room = layout.Classroom.load(pathlib.Path({str(room.root)!r})); "
        f"print(json.dumps([roles.confined(room, {BLANK!r}, [sys.executable, '-c', sys.argv[1]]), "
        f"roles.environment(room, {BLANK!r}), roles.__file__]))"
    )
    planned = subprocess.run(
        [python, "-I", "-c", spawn, search_code(needles)], capture_output=True, text=True
    )
    assert planned.returncode == 0, planned.stderr[-2000:]
    command, environment, roles_file = json.loads(planned.stdout)
    assert roles_file.startswith(str(room.root / "installed-hub")), roles_file
    searched = subprocess.run(command, env=environment, capture_output=True, text=True)
    found = files_holding(searched.stdout + searched.stderr, needles)
    runtime = [path for path, held in found.items() if RUNTIME_LINE in held]
    assert any(path.startswith(str(room.runtime)) for path in runtime), found
    leaks = {path: held for path, held in found.items() if set(held) - {RUNTIME_LINE}}
    assert not leaks, f"a student's server reads the hub's installed course files: {leaks}"


def _cluster_of(room: Classroom, student: str) -> dict:
    """A student's practice cluster, started as their server starts it; kubeconfig read as root."""
    setup.as_user(
        room, student, "python", "-m", "autograder", "cluster", "up", "--provider", "practice"
    )
    return yaml.safe_load((Path(f"/home/{student}") / KWOK_KUBECONFIG).read_text())


def _client(server: str, ca: str, cert: str, key: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.host, configuration.ssl_ca_cert = server, ca
    configuration.cert_file, configuration.key_file = cert, key
    return client.CoreV1Api(client.ApiClient(configuration))


def _memory_mib(user: str) -> float:
    """The resident memory of every process of `user`, in MiB."""
    uid = pwd.getpwnam(user).pw_uid
    return (
        sum(
            process.info["memory_info"].rss
            for process in psutil.process_iter(["uids", "memory_info"])
            if process.info["uids"] and process.info["uids"].real == uid
        )
        / 2**20
    )


def test_a_students_credentials_get_nothing_from_anothers_cluster(
    classroom: tuple[Classroom, dict[str, str]], capsys: pytest.CaptureFixture
) -> None:
    room, _ = classroom
    started = time.monotonic()
    own, other = (_cluster_of(room, student) for student in (SOLVER, BLANK))
    seconds = (time.monotonic() - started) / 2
    mine, theirs = own["users"][0]["user"], other["clusters"][0]["cluster"]
    pods = _client(
        theirs["server"],
        theirs["certificate-authority"],
        mine["client-certificate"],
        mine["client-key"],
    )
    for attempt in (
        lambda: pods.list_namespaced_pod("default"),
        lambda: pods.delete_collection_namespaced_pod("default"),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 401, refused.value
    holder = _client(
        theirs["server"],
        theirs["certificate-authority"],
        other["users"][0]["user"]["client-certificate"],
        other["users"][0]["user"]["client-key"],
    )
    assert (
        holder.list_namespaced_pod("default") is not None
    )  # the same call with the owner's credentials works
    key = other["users"][0]["user"]["client-key"]
    with pytest.raises(LabError, match="No such file or directory"):
        setup.as_user(room, SOLVER, "cat", key)  # and no student's filesystem holds another's key
    with capsys.disabled():
        print(
            f"\n[classroom] a student's practice cluster: up in {seconds:.0f} s each; "
            "resident memory "
            + ", ".join(f"{student} {_memory_mib(student):.0f} MiB" for student in room.students)
        )


def _refusal_shown(page: Page, shots: Screenshots, who: str, what: str) -> str:
    """Submit in the Assignments tab; the text of the refusal's dialog, once shot and closed."""
    open_assignments(page, shots, who)
    click_in_row(page, "fetched", "Submit")
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=120_000)
    shown = dialog.inner_text()
    shots.take(page, f"{who}-refused-{what}")
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached")
    return shown


def _inbound_timestamps(room: Classroom, student: str) -> list[str]:
    """The timestamps of a student's submissions in the exchange's inbound, oldest first."""
    inbound = room.exchange / COURSE_ID / "inbound"
    return sorted(
        name.split("+")[2].rsplit(" ", 1)[0]
        for name in os.listdir(inbound)
        if name.startswith(f"{student}+{ASSIGNMENT}+")
    )


def test_bad_submissions_are_refused_in_the_assignments_tab_and_the_latest_late_one_is_graded_late(
    classroom: tuple[Classroom, dict[str, str]],
    practice_cluster,
    browser: Browser,
    shots: Screenshots,
) -> None:
    room, passwords = classroom
    setup.as_instructor(room, "nbgrader", "release_assignment", ASSIGNMENT, "--force")
    setup.as_instructor(
        room, "nbgrader", "db", "assignment", "add", ASSIGNMENT, "--duedate=2020-01-01 00:00 UTC"
    )
    setup.as_user(room, LATE, "nbgrader", "fetch_assignment", ASSIGNMENT)
    work = f"{ASSIGNMENT}/{NOTEBOOK_01}.ipynb"
    page = _session(browser, room, passwords, LATE)
    setup.as_user(room, LATE, "mv", work, f"{ASSIGNMENT}/01-my-answers.ipynb")
    shown = _refusal_shown(page, shots, LATE, "renamed")
    assert "not submitted" in shown and f"{NOTEBOOK_01}.ipynb: MISSING" in shown, shown
    setup.as_user(room, LATE, "mv", f"{ASSIGNMENT}/01-my-answers.ipynb", work)
    setup.as_user(room, LATE, "truncate", "--size=2G", f"{ASSIGNMENT}/dataset.bin")
    shown = _refusal_shown(page, shots, LATE, "oversized")
    assert "holds 2,048 MiB, more than the 50 MiB" in shown and "Move data sets" in shown, shown
    setup.as_user(room, LATE, "rm", f"{ASSIGNMENT}/dataset.bin")
    assert not _inbound_timestamps(room, LATE), "a refused submission reached the exchange"

    for _ in range(2):
        setup.as_user(room, LATE, "nbgrader", "submit", ASSIGNMENT)
    first, latest = _inbound_timestamps(room, LATE)
    _collect_and_grade(room)
    with Gradebook(Course(room.course).dirs.db_url) as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, LATE)
        stamp, late = submission.timestamp, submission.total_seconds_late
    assert stamp.strftime("%Y-%m-%d %H:%M:%S") in latest and first != latest, (stamp, first, latest)
    assert late > 0, f"the late submission's lateness was lost: {late}"


def test_a_notebook_that_connects_while_the_cluster_starts_says_it_waits(
    classroom: tuple[Classroom, dict[str, str]],
) -> None:
    """As when a student opens a notebook at once after logging in, while their server starts
    their cluster (here another process holds the cluster's lock for a few seconds, as that start
    does)."""
    room, _ = classroom
    waiting = (
        "mkdir -p .kwok/clusters && (flock .kwok/clusters/.ml-learning.lock sleep 8 &) && "
        "sleep 2 && "
        "python -c 'from autograder.lab import connect; print(connect().namespace)'"
    )
    said = setup.as_user(room, LATE, "sh", "-c", waiting)
    assert "is being started or stopped by another process" in said, said
    assert "waiting for it..." in said and "Traceback" not in said, said
    assert said.strip().splitlines()[-1] == "ml-lab", said
