"""nbgrader's submit for this class: a folder too big for a lesson's work is refused, saying why."""

from __future__ import annotations

import os
from pathlib import Path

from nbgrader.exchange.default.submit import ExchangeSubmit
from traitlets import Integer

MIB = 2**20


def folder_bytes(folder: Path) -> int:
    """What the files below `folder` hold (links not followed: a link's target is not submitted)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total


class BoundedSubmit(ExchangeSubmit):
    """ExchangeSubmit that refuses, before copying anything, an assignment folder over `max_mib`."""

    max_mib = Integer(50, help="the most a submission's folder may hold, in MiB").tag(config=True)

    def check_filename_diff(self) -> None:
        held = folder_bytes(Path(self.src_path))
        if held > self.max_mib * MIB:
            self.fail(
                f"Assignment {self.coursedir.assignment_id} not submitted: its folder "
                f"{self.src_path} holds {held / MIB:,.0f} MiB, more than the {self.max_mib} MiB a "
                "submission may hold. Move data sets, models and other large files out of it "
                "(elsewhere in your home), then submit again."
            )
        super().check_filename_diff()
