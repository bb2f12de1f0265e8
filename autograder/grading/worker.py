"""Autograde one submission in a process of its own: a crash or a hang here never stops the class.

Run by the class runner as `python -m autograder.grading.worker`; its environment is the one the
student's kernel inherits (the student's kubeconfig and namespace), its arguments tell it where
the grader's read-only kubeconfig is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.apps import NbGraderAPI
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder.grading import jail
from autograder.grading.verify import ClusterVerifiedExecute

CONFIG_FILE = "nbgrader_config.py"


def course_config(course: Path) -> Config:
    """The course's nbgrader_config.py, loaded as nbgrader itself would."""
    config = Config()
    if (course / CONFIG_FILE).is_file():
        config.merge(PyFileConfigLoader(CONFIG_FILE, path=str(course)).load_config())
    config.CourseDirectory.root = str(course)
    return config


def grading_config(course: Path, namespace: str, reader_kubeconfig: Path, cell_timeout: int,
                   patience: float, kernel_name: str = "") -> Config:
    """The course's settings with nbgrader's Execute swapped for the cluster-verifying one."""
    config = course_config(course)
    config.Autograde.autograde_preprocessors = [
        ClusterVerifiedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
        SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
    ]
    config.Execute.timeout = cell_timeout
    config.Execute.interrupt_on_timeout = True
    if kernel_name:
        config.Execute.kernel_name = kernel_name
    config.ClusterVerifiedExecute.namespace = namespace
    config.ClusterVerifiedExecute.reader_kubeconfig = str(reader_kubeconfig)
    config.ClusterVerifiedExecute.patience = patience
    config.ClusterVerifiedExecute.exclusive_lock = str(course / ".grading" / "cluster-exclusive.lock")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.grading.worker", description=__doc__)
    parser.add_argument("--course", type=Path, required=True)
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--reader-kubeconfig", type=Path, required=True)
    parser.add_argument("--cell-timeout", type=int, default=120)
    parser.add_argument("--patience", type=float, default=30.0)
    parser.add_argument("--submitted-directory", type=Path,
                        help="read submissions from here (the grader's regular-file copies), not submitted/")
    parser.add_argument("--jail-hide", type=Path, action="append",
                        help="run the kernel in the jail, with these paths covered (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kernelspec-") as specs:
        kernel_name = ""
        if args.jail_hide:
            jail.write_kernelspec(Path(specs), args.jail_hide)
            os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [specs, os.environ.get("JUPYTER_PATH")]))
            kernel_name = jail.KERNEL_NAME
        config = grading_config(args.course, args.namespace, args.reader_kubeconfig, args.cell_timeout,
                                args.patience, kernel_name)
        if args.submitted_directory:
            config.CourseDirectory.submitted_directory = str(args.submitted_directory)
        result = NbGraderAPI(config=config).autograde(args.assignment, args.student, force=True, create=True)
    json.dump({"success": bool(result.get("success")), "error": result.get("error", ""),
               "log": result.get("log", "")}, sys.stdout)
    return 0 if result.get("success") else 1


if __name__ == "__main__":
    sys.exit(main())
