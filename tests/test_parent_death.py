"""A process tied to its parent (jail, kernel, container, worker) stops whenever the parent dies."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from autograder.shared import isolation


def _forked(body: Callable[[], object]) -> int:
    """Run `body` in a fork that ends with it; the fork's pid."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _everything_written(read: int) -> bytes:
    with open(read, "rb") as pipe:
        return pipe.read()


def test_a_child_whose_parent_died_before_it_asked_stops_at_once() -> None:
    read, write = os.pipe()
    middle_pid: list[int] = []

    def child() -> None:
        while os.getppid() == middle_pid[0]:  # asks only once its parent is gone
            time.sleep(0.01)
        isolation.die_with_parent()
        os.write(write, b"the orphan ran on")

    def middle() -> None:
        middle_pid.append(os.getpid())
        _forked(child)

    pid = _forked(middle)
    os.close(write)
    os.waitpid(pid, 0)
    assert _everything_written(read) == b""


def test_a_child_and_a_parent_that_forked_it_both_run_on_while_their_parents_live() -> None:
    read, write = os.pipe()
    child_done_read, child_done = os.pipe()

    def child() -> None:
        isolation.die_with_parent()
        os.write(write, b"child ran on;")
        os.close(child_done)

    def middle() -> None:
        _forked(child)
        os.close(child_done)
        isolation.die_with_parent()  # after a fork of its own: it still knows its own parent
        _everything_written(child_done_read)  # stays the child's parent until the child is done
        os.write(write, b"parent ran on")

    pid = _forked(middle)
    for end in (write, child_done, child_done_read):
        os.close(end)
    os.waitpid(pid, 0)
    assert _everything_written(read) == b"child ran on;parent ran on"
