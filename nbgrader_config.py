"""nbgrader settings: the repository root is the course directory; no exchange is used."""

from pathlib import Path

c = get_config()  # noqa: F821 - nbgrader injects get_config when it loads this file

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.course_id = "k8s-ml-lesson01"
# ml-api/ is the work folder notebooks 4 and 5 write (app.py, Dockerfile, deployment.yaml): never an assignment file.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "ml-api"]

# Grading with `python -m autograder grade` (its --jobs, --cell-timeout, ... override these).
# A cell gets two minutes; then its kernel is interrupted, or killed if it will not stop.
c.GradingSettings.cell_timeout = 120
c.GradingSettings.jobs = 1
# Parallel graders wait up to a minute for SQLite's write lock instead of failing.
c.CourseDirectory.db_url = f"sqlite:///{Path(c.CourseDirectory.root) / 'gradebook.db'}?timeout=60"
# No exchange is used, but nbgrader looks for its folder at every start and, without a writable one,
# prints "Unwritable directory, please contact your instructor": give it one inside the course.
EXCHANGE = Path(c.CourseDirectory.root) / ".grading" / "exchange"
EXCHANGE.mkdir(parents=True, exist_ok=True)
c.Exchange.root = str(EXCHANGE)
# No image is loaded for grading: a submission's pods run only the images its own notebooks built
# (on the practice cluster, each graded namespace runs only its own: autograder/practice/catalog.py).
# Notebooks that use the whole practice cluster (both GPU nodes, a cordoned node, bin packing):
# parallel graders run these one submission at a time.
c.ClusterVerifiedExecute.exclusive_notebooks = ["07-beyond-the-lesson"]
# Outside those, a submission's quota of every extended resource the nodes advertise is 0, and its pods
# are few and small (sandbox.POD_CAP, POD_ALLOWANCE): no submission can hold a GPU, or the CPUs, that
# another's notebook 07 needs. Notebook 07 places two one-GPU pods and shows a third one Pending for want
# of a GPU node: it is lent three, and pods of any size, for as long as it runs, and its pods go with it.
c.ClusterVerifiedExecute.exclusive_quota = {"requests.nvidia.com/gpu": "3"}
# Feedback shows each test's verdict, never the hidden tests themselves: nbgrader's own feedback
# would print them (jupyter/nbgrader#917), and with them the answers, to this class and the next.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
