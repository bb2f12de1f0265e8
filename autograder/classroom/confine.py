"""A student's server in a filesystem of its own.

`python -m autograder.classroom.confine USER KEEP... -- CMD`.

The hub starts it as root; it keeps only the system, the paths named (but those hidden in them), the
student's home and the exchange (both writable), then becomes the student for good and runs the
server. The instructor's course, the masters, other students' homes and the checkout the hub runs
from are not in that filesystem.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path

from autograder.shared import isolation

SCRATCH = ((Path("/tmp"), "size=1g,mode=1777"), (Path("/dev/shm"), "size=64m,mode=1777"))


def confine(user: str, keep: list[Path], shared: list[Path], hide: list[Path]) -> None:
    """Make this process's filesystem the student's view, then drop to their uid for good."""
    account = pwd.getpwnam(user)
    home = Path(account.pw_dir)
    isolation.unshare(isolation.CLONE_NEWNS)
    isolation.enter_root(
        isolation.Root(
            keep=tuple(keep),
            writable=home,
            shared=tuple(shared),
            scratch=SCRATCH,
            hidden=tuple(hide),
        )
    )
    isolation.drop_privileges(account.pw_uid, account.pw_gid)
    os.chdir(home)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder.classroom.confine")
    parser.add_argument("user")
    parser.add_argument(
        "--keep", type=Path, action="append", default=[], help="read-only, repeatable"
    )
    parser.add_argument(
        "--shared", type=Path, action="append", default=[], help="writable, repeatable"
    )
    parser.add_argument(
        "--hide", type=Path, action="append", default=[], help="inside a kept path, repeatable"
    )
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("name the command to run after --")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    confine(args.user, args.keep, args.shared, args.hide)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
