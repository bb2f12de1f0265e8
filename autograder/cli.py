"""`python -m autograder ...`: cluster lifecycle, a health report, the lesson demo, benchmarks."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from autograder.classroom.layout import DEFAULT_ROOT
from autograder.providers.choice import PROVIDERS, provider
from autograder.shared.errors import LabError
from autograder.shared.pins import PIN_OF


def _cluster(args: argparse.Namespace) -> int:
    from autograder.providers.choice import choose

    chosen = choose(args.provider)
    if args.action == "up":
        chosen.up()
    elif args.action == "down":
        # `down` without --provider removes the lab's own clusters, never an existing one.
        for target in [chosen] if args.provider else [provider("practice"), provider("kind")]:
            target.down()
    else:
        for name in [args.provider] if args.provider else list(PROVIDERS):
            print(provider(name).status())
    return 0


def _doctor(_: argparse.Namespace) -> int:
    from autograder.doctor import report

    return report()


def _demo(args: argparse.Namespace) -> int:
    from autograder.demo import run_lesson_flow

    return run_lesson_flow(args.provider)


def binaries_wanted(args: argparse.Namespace) -> list[str]:
    """The binaries `binaries` obtains: every known one, or those the named providers run."""
    if args.all:
        return sorted(PIN_OF)
    return list(
        dict.fromkeys(
            name
            for chosen in args.providers or ["practice"]
            for name in provider(chosen).required_binaries
        )
    )


def _binaries(args: argparse.Namespace) -> int:
    from autograder.shared import binaries

    for name, path in binaries.ensure(binaries_wanted(args)).items():
        print(f"{name:<24} {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.target == "grade":
        from autograder.bench import grade as grading_bench

        return grading_bench.run(args.students, args.jobs, provider=args.provider)
    from autograder import bench

    return bench.run(args.target, provider_name=args.provider)


def _notebooks(args: argparse.Namespace) -> int:
    from autograder import notebooks

    if args.action == "run":
        return _run_notebooks(notebooks, args)
    if args.action == "sync":
        changed = notebooks.sync()
        print(
            "notebooks/ updated: " + ", ".join(changed)
            if changed
            else "notebooks/ already up to date"
        )
        return 0
    stale = notebooks.drift()
    if stale:
        print(
            "notebooks/ differs from the masters in: "
            + ", ".join(stale)
            + "\nrun `python -m autograder notebooks sync` and commit the result",
            file=sys.stderr,
        )
        return 1
    print("notebooks/ matches what nbgrader generates from source/")
    return 0


def _run_notebooks(notebooks, args: argparse.Namespace) -> int:
    """Run every master (or, with --student, every student notebook) and print a timing table."""
    folder = notebooks.REPO_ROOT / (
        notebooks.STUDENT_DIR if args.student else f"{notebooks.SOURCE_DIR}/{notebooks.ASSIGNMENT}"
    )
    runs = notebooks.run_all(folder, args.provider)
    width = max(len(run.name) for run in runs)
    print(f"{'notebook':<{width}}  seconds  errors")
    for run in runs:
        print(f"{run.name:<{width}}  {run.seconds:>7.1f}  {len(run.errors)}")
    failed = [f"{run.name}: {error}" for run in runs for error in run.errors]
    if failed and not args.student:
        print("the solved masters must run without errors:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


def _kind_image(args: argparse.Namespace) -> int:
    from autograder.build import nodeimage

    print(nodeimage.build(force=args.force).summary())
    return 0


def _hosted_image(args: argparse.Namespace) -> int:
    from autograder.build import hostedimage

    default_tag = hostedimage.STUDENT_TAG if args.student else hostedimage.HOSTED_TAG
    built = hostedimage.build(
        args.tag or default_tag,
        nocache=args.no_cache,
        use_cached_binaries=not args.build_binaries,
        student=args.student,
    )
    print(built.summary())
    return 0


def _classroom(args: argparse.Namespace) -> int:
    from autograder.classroom import hub, setup
    from autograder.classroom.layout import ASSIGNMENT, Classroom
    from autograder.grading.classrun import app

    if args.action == "up":
        room = Classroom(args.root, args.instructor, tuple(args.student), args.port)
        setup.up(room)
        hub.start(room)
        print(hub.next_steps(room))
        return 0
    room = Classroom.load(args.root)
    if args.action == "down":
        print(f"stopped the hub at {room.url}" if hub.stop(room) else "no hub was running")
        return 0
    setup.require_root()
    if args.action == "nbgrader":
        print(setup.as_instructor(room, "nbgrader", *args.arguments), end="")
        return 0
    graded = app.main([ASSIGNMENT, f"--course={room.course}"])
    setup.give_course_back(room)
    return graded


def _provider_name(text: str) -> str:
    """Validate a positional provider name (argparse rejects an empty `nargs="*"` with choices)."""
    if text not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"unknown provider {text!r}; choose from {', '.join(PROVIDERS)}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    cluster = commands.add_parser("cluster", help="create, delete or inspect the lab cluster")
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument(
        "--provider",
        choices=list(PROVIDERS),
        help="practice (no Docker), kind (Docker) or existing (current context)",
    )
    cluster.set_defaults(handler=_cluster)

    doctor = commands.add_parser(
        "doctor", help="check Docker, kind, the binaries, Go and the context"
    )
    doctor.set_defaults(handler=_doctor)

    demo = commands.add_parser("demo", help="run the lesson's deploy/scale/update/rollback flow")
    demo.add_argument("--provider", choices=list(PROVIDERS))
    demo.set_defaults(handler=_demo)

    found = commands.add_parser(
        "binaries", help="find or build the binaries the named clusters run"
    )
    found.add_argument(
        "providers",
        nargs="*",
        type=_provider_name,
        metavar="PROVIDER",
        help="practice (the default), kind or existing; repeatable",
    )
    found.add_argument(
        "--all", action="store_true", help="every binary the lab knows, kubelet included"
    )
    found.set_defaults(handler=_binaries)

    kind_image = commands.add_parser(
        "kind-image", help="build the kind node image offline, from local parts"
    )
    kind_image.add_argument("action", choices=["build"])
    kind_image.add_argument(
        "--force", action="store_true", help="rebuild even when the inputs are unchanged"
    )
    kind_image.set_defaults(handler=_kind_image)

    hosted = commands.add_parser(
        "hosted-image", help="build the hosted JupyterLab image (binder/Dockerfile)"
    )
    hosted.add_argument("action", choices=["build"])
    hosted.add_argument(
        "--tag",
        help="the image's tag (k8s-ml-lab-hosted:latest, with --student k8s-ml-lab-student:latest)",
    )
    hosted.add_argument(
        "--student",
        action="store_true",
        help="the student image for a class: the release and the lab runtime, no answers",
    )
    hosted.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    hosted.add_argument(
        "--build-binaries",
        action="store_true",
        help="build the cluster binaries with Go in the image's build stage, as Binder "
        "does, instead of taking this machine's cached ones",
    )
    hosted.set_defaults(handler=_hosted_image)

    bench = commands.add_parser("bench", help="print timing and memory figures")
    bench.add_argument("target", choices=["cluster", "image", "hosted", "grade"])
    bench.add_argument("--provider", choices=list(PROVIDERS), default="practice")
    bench.add_argument(
        "--students", type=int, default=4, help="grade: how many synthetic submissions"
    )
    bench.add_argument(
        "--jobs", type=int, default=2, help="grade: parallel workers for the second pass"
    )
    bench.set_defaults(handler=_bench)

    # `grade` is a traitlets Application, as nbgrader's commands are: main() hands it its arguments.
    commands.add_parser(
        "grade",
        help="autograde submissions by the cluster state they produce "
        "(`grade --help` lists its options)",
    )

    room = commands.add_parser(
        "classroom", help="a JupyterHub class on this machine with nbgrader's exchange"
    )
    actions = room.add_subparsers(dest="action", required=True)
    for name, text in (
        ("up", "make the users, exchange, course and students' runtime, and start the hub (root)"),
        ("down", "stop the hub and every user's server"),
        ("grade", "grade the collected submissions in the instructor's course (root)"),
        (
            "nbgrader",
            "run nbgrader as the instructor in their course, e.g. nbgrader collect lesson01",
        ),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--root",
            type=Path,
            default=DEFAULT_ROOT,
            help=f"the classroom's folder ({DEFAULT_ROOT})",
        )
        action.set_defaults(handler=_classroom)
    up = actions.choices["up"]
    up.add_argument("--instructor", default="instructor", help="the instructor's Unix user")
    up.add_argument(
        "--student", action="append", required=True, help="a student's Unix user (repeatable)"
    )
    up.add_argument("--port", type=int, default=8000, help="the hub's port on loopback")
    actions.choices["nbgrader"].add_argument(
        "arguments", nargs=argparse.REMAINDER, help="nbgrader's command"
    )

    books = commands.add_parser("notebooks", help="regenerate or check the student notebooks")
    books.add_argument(
        "action",
        choices=["sync", "check", "run"],
        help="sync: write notebooks/ from source/ with nbgrader; check: report drift; "
        "run: execute the solved masters (or --student notebooks) with timings",
    )
    books.add_argument("--student", action="store_true", help="run: the student notebooks instead")
    books.add_argument("--provider", choices=list(PROVIDERS), help="run: which cluster to use")
    books.set_defaults(handler=_notebooks)
    return parser


def scripts_on_path() -> None:
    """As in an activated venv.

    nbgrader runs `alembic` (and jupyter) through PATH, so this interpreter's own scripts come first
    also when it is called by its full path (`.venv/bin/python -m autograder`).
    """
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, path]) if path else scripts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    scripts_on_path()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if argv[:1] == ["grade"]:
            from autograder.grading.classrun import app

            return app.main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (LabError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing half-made was kept", file=sys.stderr)
        return 130
