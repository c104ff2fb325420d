"""The ``promote`` command line: for people and CI, over the same flows and files as the Prefect UI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from promote.pipeline import PipelineError, load_pipeline

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    files: list[Path] = []
    for target in args.files:
        path = Path(target)
        files.extend(sorted(path.glob("*.y*ml")) if path.is_dir() else [path])
    if not files:
        print("promote validate: no pipeline files found", file=sys.stderr)
        return EXIT_USAGE
    for file in files:
        try:
            pipeline = load_pipeline(file)
        except PipelineError as exc:
            print(str(exc), file=sys.stderr)
            status = EXIT_FAILED
            continue
        if not args.quiet:
            print(f"{file}: ok (pipeline {pipeline.name}: {' -> '.join(pipeline.names)})")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promote",
        description="Promote releases between GitOps environments (Argo CD, Flux) as Prefect flows.",
        epilog="Pipeline file format: deployments/README.md. Examples: deployments/examples/.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = sub.add_parser(
        "validate",
        help="check pipeline files and print precise errors",
        description="Validate pipeline files (or every *.yaml in a directory). Exit 0 if all are valid, "
        "1 if any is not; each error names the file, line, field and what is allowed.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="pipeline file or directory")
    validate.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    validate.set_defaults(handler=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
