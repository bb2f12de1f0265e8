"""Progress bars are widgets in JupyterLab and text in a terminal; kernel starts warn nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from autograder import notebooks

# A rollout-like bar made with the tqdm the lab's own modules use.
BAR = """from autograder.lab.workloads import tqdm
with tqdm(desc="rollout demo", unit="ready", leave=True) as bar:
    bar.reset(total=3)
    bar.update(3)
"""


def test_progress_is_a_widget_in_a_notebook_kernel(tmp_path: Path) -> None:
    path = tmp_path / "progress.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BAR)]), path)
    notebook, _ = notebooks.execute(path, timeout=120)
    outputs = notebook.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), (
        outputs
    )
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], outputs


def test_progress_is_text_in_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BAR], capture_output=True, text=True, timeout=60, check=True
    )
    assert "rollout demo: 100%" in done.stderr and "3/3" in done.stderr, done.stderr


def test_a_notebook_run_prints_no_kernel_warnings(tmp_path: Path) -> None:
    path = tmp_path / "quiet.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('ok')")]), path)
    script = (
        "from autograder import notebooks; "
        f"notebooks.execute(__import__('pathlib').Path({str(path)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "WARNING" not in done.stderr and "without encryption" not in done.stderr, done.stderr
