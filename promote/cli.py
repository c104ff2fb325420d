"""The ``promote`` command line: for people and CI, over the same flows and files as the Prefect UI."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.load import PipelineError, load_pipeline
from promote.notifications import DEFAULT_EVENTS
from rules.errors import PromoteError

if TYPE_CHECKING:
    from pipeline.model import Pipeline
    from tasks.board import BoardRow
    from tasks.gitrepo import GitRepository

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _pipeline_files(targets: Sequence[str]) -> list[Path]:
    """Files as given, and every *.yaml / *.yml of a directory (sorted)."""
    files: list[Path] = []
    for target in targets:
        path = Path(target)
        files.extend(sorted(path.glob("*.y*ml")) if path.is_dir() else [path])
    return files


def _cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    files = _pipeline_files(args.files)
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
        for warning in pipeline.warnings():
            print(f"{file}: warning: {warning}", file=sys.stderr)
    return status


def _cmd_plan(args: argparse.Namespace) -> int:
    from tasks.connections import open_repository
    from tasks.plan import plan_pipeline

    pipeline = load_pipeline(args.file)
    print(f"plan for pipeline {pipeline.name} ({args.file}); nothing is changed\n")
    for plan in plan_pipeline(open_repository(pipeline), pipeline):
        print(plan.render())
        print()
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    """What runs where, per pipeline, from Git alone (the board artifact's rows: tasks/board.py). A pipeline
    that cannot be read is named on stderr and the others are still shown; exit 1 if any failed."""
    import json
    from dataclasses import asdict

    from tasks.board import board_rows, ignored_lines, render_text
    from tasks.connections import evidence_policy, open_repository

    files = _pipeline_files(args.files)
    if not files:
        print("promote status: no pipeline files found", file=sys.stderr)
        return EXIT_USAGE
    if args.svg is not None and len(files) != 1:
        print(f"promote status: --svg draws one pipeline, and {len(files)} were given: name one file", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    fetched: dict[str, GitRepository] = {}  # pipelines in one repository share its clone: fetch it once
    boards: list[dict[str, object]] = []
    for file in files:
        try:
            pipeline = load_pipeline(file)
            repo = fetched.get(pipeline.repository.url)
            if repo is None:
                repo = open_repository(pipeline)
                repo.fetch()
                fetched[pipeline.repository.url] = repo
            repo.evidence_policy = evidence_policy(pipeline, signing=False)  # each pipeline trusts its own keys
            rows = board_rows(repo, pipeline)
            ignored = ignored_lines(repo, pipeline)
            if args.svg is not None:
                _write_picture(Path(args.svg), pipeline, repo, rows)
        except PromoteError as exc:
            print(f"promote status: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if args.json:
            rows_json = [asdict(row) for row in rows]
            boards.append({"file": str(file), "pipeline": pipeline.name, "rows": rows_json, "ignored": ignored})
        else:
            text = render_text(f"{pipeline.name} ({file})", rows)
            if ignored:
                text += "\nevidence ignored (it does not count for any promotion):\n" + "\n".join(
                    f"  {line}" for line in ignored
                )
            print(text + "\n")
    if args.json:
        print(json.dumps({"pipelines": boards}, indent=1))
    return status


def _write_picture(path: Path, pipeline: Pipeline, repo: GitRepository, rows: list[BoardRow]) -> None:
    """The board as an SVG picture (tasks/boardpicture.py) at ``path``: written whole beside it, then moved into
    place, never through a symbolic link."""
    from datetime import UTC, datetime

    from tasks.boardpicture import lags, render_svg
    from tasks.plan import plan_pipeline
    from tasks.terminal import printable

    shown = printable(str(path))[:200]
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise PromoteError(f"--svg {shown}: not a regular file; name a new file or a regular file to replace")
    if not path.parent.is_dir():
        raise PromoteError(f"--svg {shown}: its folder does not exist; create it first")
    picture = lags(pipeline, plan_pipeline(repo, pipeline, fetch=False))  # fetched once above, for the rows too
    svg = render_svg(f"pipeline {pipeline.name}", rows, picture, datetime.now(UTC))
    try:
        fd, name = tempfile.mkstemp(prefix=".promote-status-", suffix=".svg", dir=path.parent)
    except OSError as exc:
        raise PromoteError(f"--svg {shown}: cannot write in its folder: {exc.strerror}") from None
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(svg)
        temporary.chmod(0o644)
        temporary.replace(path)  # replaces the name itself: never writes through a link put there meanwhile
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise PromoteError(f"--svg {shown}: could not write it: {exc.strerror}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _cmd_metrics(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from tasks.measure import measure_pipelines
    from tasks.metrics import Window, parse_since, render_table

    now = datetime.now(UTC)
    try:
        window = Window(parse_since(args.since, now), now)
    except ValueError as exc:
        print(f"promote metrics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = _pipeline_files(args.files)
    if not files:
        print("promote metrics: no pipeline files found", file=sys.stderr)
        return EXIT_USAGE
    measured = measure_pipelines([load_pipeline(file) for file in files], window)
    if args.json:
        print(json.dumps([m.as_json() for m in measured], indent=1))
        return EXIT_OK
    print(f"delivery metrics from {window.since.isoformat(timespec='seconds')} to {now.isoformat(timespec='seconds')}")
    print("(production: each pipeline's last environment; definitions: docs/metrics.md)\n")
    print(render_table(measured))
    return EXIT_OK


def _decide(args: argparse.Namespace, approve: bool) -> int:
    from tasks.approval import ResumeError, resume_run
    from tasks.prefectapi import ApiConfig

    if not approve and not args.reason.strip():
        print("promote reject: --reason is required", file=sys.stderr)
        return EXIT_USAGE
    api = ApiConfig.from_env()
    decision = {"approve": approve, "approver": args.approver, "reason": args.reason}
    try:
        state = resume_run(api.url, args.run_id, decision, api_key=api.key, timeout=args.timeout)
    except ResumeError as exc:
        print(f"promote {'approve' if approve else 'reject'}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{'approved' if approve else 'rejected'} run {args.run_id} as {args.approver}; it is now {state}")
    return EXIT_OK


def _cmd_receive(args: argparse.Namespace) -> int:
    from webhooks import receiver

    receiver.run_forever(
        args.directory,
        host=args.host,
        port=args.port,
        debounce=args.debounce,
        secret_env=args.secret_env,
        registry_token_env=args.registry_token_env,
    )
    return EXIT_OK


def _cmd_notifications(args: argparse.Namespace) -> int:
    from promote import notifications

    events = notifications.parse_events(args.on)
    applied = notifications.apply(args.block, events, args.pipeline)
    print(notifications.describe(applied, args.block, args.pipeline))
    return EXIT_OK


def _cmd_freeze(args: argparse.Namespace) -> int:
    from tasks import freeze
    from tasks.prefectapi import ApiConfig
    from tasks.terminal import printable

    api = ApiConfig.from_env()
    if args.state is None:
        print(printable(freeze.describe(freeze.read(api, timeout=args.timeout))))
        return EXIT_OK
    if args.state == "on" and not args.reason.strip():
        print("promote freeze: --reason is required to turn the freeze on", file=sys.stderr)
        return EXIT_USAGE
    value = freeze.switch(api, args.state == "on", args.reason, args.by, timeout=args.timeout)
    print(printable(freeze.describe(value)))
    return EXIT_OK


def _cmd_trigger(args: argparse.Namespace) -> int:
    from promote.trigger import CREATE_SECONDS, create_run, default_idempotency_key, follow, parse_params
    from tasks.httpbounds import Deadline
    from tasks.prefectapi import ApiConfig

    api = ApiConfig.from_env()
    params = parse_params(args.param)
    key = args.idempotency_key or default_idempotency_key(args.deployment, params)
    # --timeout bounds the whole command, creating the run included; without it only the creation is bounded.
    deadline = Deadline(args.timeout if args.timeout is not None else CREATE_SECONDS)
    run = create_run(api, args.deployment, params, key, deadline=deadline)
    ui = api.url.removesuffix("/api")
    print(f"flow run {run['name']} ({run['id']}) of {args.deployment}: {ui}/runs/flow-run/{run['id']}")
    if not args.wait:
        return EXIT_OK
    final = follow(api, str(run["id"]), print, deadline=deadline if args.timeout is not None else None)
    return EXIT_OK if final == "COMPLETED" else EXIT_FAILED


def _cmd_flow(args: argparse.Namespace) -> int:
    """Run a flow in this process (Prefect's ephemeral server, or PREFECT_API_URL if set), with our heartbeat
    instead of Prefect's (no second added to each run: flows/heartbeat.py)."""
    from flows.heartbeat import runs_without_the_wait

    with runs_without_the_wait():
        return _run_flow(args)


def _run_flow(args: argparse.Namespace) -> int:
    if args.command == "rc":
        from flows.promote_rc import promote_rc

        state = promote_rc(pipeline_file=args.file, bump=args.bump, dry_run=args.dry_run, return_state=True)
    elif args.command == "production":
        from flows.promote_production import promote_production

        state = promote_production(
            pipeline_file=args.file,
            rc=args.rc,
            dry_run=args.dry_run,
            override_hold=args.override_hold,
            return_state=True,
        )
    elif args.command == "environment":
        from flows.promote_environment import promote_environment

        state = promote_environment(
            pipeline_file=args.file,
            environment=args.env,
            rc=args.rc,
            dry_run=args.dry_run,
            override_hold=args.override_hold,
            return_state=True,
        )
    elif args.command == "rollback":
        from flows.rollback import rollback

        state = rollback(
            pipeline_file=args.file,
            environment=args.environment,
            to_version=args.to,
            dry_run=args.dry_run,
            return_state=True,
        )
    else:
        from flows.nightly import nightly

        night = nightly(
            pipelines_dir=args.directory,
            production=not args.no_production,
            dry_run=args.dry_run,
            advance=args.advance,
            fan_out_to=args.fan_out_to,
            return_state=True,
        )
        print(f"{args.command}: {night.name}{': ' + night.message if night.message else ''}")
        return EXIT_OK if night.is_completed() else EXIT_FAILED
    print(f"{args.command}: {state.name}{': ' + state.message if state.message else ''}")
    return EXIT_OK if state.is_completed() else EXIT_FAILED


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

    status = sub.add_parser(
        "status",
        help="what runs where: each environment's version, commit, since when, verified, approved by (from Git)",
        description="For every pipeline file (or every *.yaml in a directory), one row per environment in chain "
        "order: the version the pipeline's branch names, its commit, when it was promoted there, when it was last "
        "verified there, who approved it, and the run; from the repository and its evidence notes alone (no "
        "Prefect server). The same table as the board-<pipeline> artifact each promotion run writes.",
    )
    status.add_argument("files", nargs="+", metavar="FILE", help="pipeline file or directory")
    status.add_argument("--json", action="store_true", help="print JSON (full commits, ISO 8601 times)")
    status.add_argument(
        "--svg",
        metavar="OUT",
        help="also draw the pipeline as a picture into OUT (an SVG file: environments as boxes in promotion order,"
        " each with its version, since when, verified or not, and how far it lags the one before it); one pipeline",
    )
    status.set_defaults(handler=_cmd_status)

    plan = sub.add_parser("plan", help="show what a promotion would change in every environment (changes nothing)")
    plan.add_argument("file", metavar="FILE", help="pipeline file")
    plan.set_defaults(handler=_cmd_plan)

    metrics = sub.add_parser(
        "metrics",
        help="delivery metrics (DORA) per pipeline from the promotion evidence in Git",
        description="Deployment frequency, lead time for changes, change failure rate and time to restore of "
        "each pipeline's production (its last environment), computed from the promotion notes in its repository "
        "alone. Definitions: docs/metrics.md.",
    )
    metrics.add_argument("files", nargs="+", metavar="FILE", help="pipeline file or directory")
    metrics.add_argument(
        "--since", default="30d", help="window start: 12h, 30d, 2w, or an ISO date or time (default: 30d)"
    )
    metrics.add_argument("--json", action="store_true", help="print JSON (durations in seconds) instead of a table")
    metrics.set_defaults(handler=_cmd_metrics)

    for name, approve in (("approve", True), ("reject", False)):
        gate = sub.add_parser(
            name,
            help=f"{name} a promotion that waits for approval (through PREFECT_API_URL)",
            description=f"{name.capitalize()} a paused or suspended promotion run. Uses PREFECT_API_URL and, "
            "for Prefect Cloud, PREFECT_API_KEY.",
        )
        gate.add_argument("run_id", metavar="RUN_ID", help="the flow run id (shown in the UI and the notification)")
        gate.add_argument(
            "--reason", required=not approve, default="", help="why" + (" (required)" if not approve else "")
        )
        gate.add_argument("--approver", default=os.environ.get("USER", "cli"), help="your name (default: $USER)")
        gate.add_argument(
            "--timeout", type=float, default=30.0, help="give up after this many seconds in all (default: 30)"
        )
        gate.set_defaults(handler=lambda a, approve=approve: _decide(a, approve))

    trigger = sub.add_parser(
        "trigger",
        help="start a deployment's run through the Prefect REST API (for CI) and optionally wait for it",
        description="Create a flow run of DEPLOYMENT (FLOW/NAME, e.g. promote-production/shop) through the REST "
        "API at PREFECT_API_URL (PREFECT_API_KEY if set). Unknown or invalid parameters are refused before a run "
        "exists. With --wait, prints each state and exits 0 only if the run ends Completed.",
    )
    trigger.add_argument("deployment", metavar="DEPLOYMENT", help="FLOW/DEPLOYMENT")
    trigger.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter (repeatable)")
    trigger.add_argument("--wait", action="store_true", help="follow the run and exit with its outcome")
    trigger.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up after this many seconds in all (creating the run and, with --wait, following it)",
    )
    trigger.add_argument(
        "--idempotency-key",
        default=None,
        help="repeat-safe key (default: from GITHUB_RUN_ID/GITHUB_RUN_ATTEMPT or CI_PIPELINE_ID)",
    )
    trigger.set_defaults(handler=_cmd_trigger)

    freeze = sub.add_parser(
        "freeze",
        help="show, or turn on or off, the org-wide freeze of gated promotions (through PREFECT_API_URL)",
        description="The freeze is the Prefect Variable promote_freeze (also settable from the UI): while on, "
        "every promotion into an environment after the entry is held; rollbacks are not.",
    )
    freeze.add_argument("state", nargs="?", choices=["on", "off"], help="omit to show the current state")
    freeze.add_argument("--reason", default="", help="why (required to turn it on)")
    freeze.add_argument("--by", default=os.environ.get("USER", "cli"), help="your name (default: $USER)")
    freeze.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    freeze.set_defaults(handler=_cmd_freeze)

    notifications = sub.add_parser(
        "notifications",
        help="send promotion events to a Prefect notification block (sets up an automation, idempotently)",
        description="Creates or rewrites the Prefect automation 'gitops-promote: notify BLOCK', which sends the "
        "chosen promotion events (docs/events.md) to a notification block: Slack, Teams, PagerDuty, email, "
        "a custom webhook. Uses PREFECT_API_URL.",
    )
    notifications.add_argument("action", choices=["apply"])
    notifications.add_argument("--block", required=True, metavar="TYPE/NAME", help="e.g. slack-webhook/ops")
    notifications.add_argument(
        "--on",
        default=",".join(DEFAULT_EVENTS),
        metavar="EVENTS",
        help=f"comma-separated event names (default: {','.join(DEFAULT_EVENTS)})",
    )
    notifications.add_argument("--pipeline", default=None, help="only this pipeline's events (default: all)")
    notifications.set_defaults(handler=_cmd_notifications)

    receive = sub.add_parser(
        "receive",
        help="receive registry and Git push webhooks as Prefect events (promote-rc starts on them: prefect.yaml)",
        description="An HTTP receiver: POST /registry (Docker registry notifications, Authorization: Bearer "
        "TOKEN), /github and /gitea (HMAC-SHA256 signature), /gitlab (X-Gitlab-Token). Each push to a "
        "pipeline's registry repository or Git branch becomes one promote.source.pushed event per burst.",
    )
    receive.add_argument("directory", nargs="?", default="deployments", metavar="DIR", help="the pipeline files")
    receive.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    receive.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    receive.add_argument("--debounce", type=float, default=10.0, help="seconds a burst of pushes is merged over")
    receive.add_argument(
        "--secret-env",
        default="PROMOTE_WEBHOOK_SECRET",
        metavar="VAR",
        help="environment variable with the forges' webhook secret (default: PROMOTE_WEBHOOK_SECRET)",
    )
    receive.add_argument(
        "--registry-token-env",
        default="PROMOTE_REGISTRY_WEBHOOK_TOKEN",
        metavar="VAR",
        help="environment variable with the registry's bearer token (default: PROMOTE_REGISTRY_WEBHOOK_TOKEN)",
    )
    receive.set_defaults(handler=_cmd_receive)

    for name, text in (
        ("rc", "run promote-rc here: tag the next rc, point staging at it, verify, record"),
        ("production", "run promote-production here: approval, stable tag, production, verify, roll back on failure"),
        ("environment", "run promote-environment here: promote ENV from the environment before it (chains)"),
        ("rollback", "run rollback here: point an environment at an earlier release and verify"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("file", metavar="FILE", help="pipeline file")
        cmd.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        if name == "rc":
            cmd.add_argument("--bump", choices=["major", "minor", "patch"], default=None)
        if name == "environment":
            cmd.add_argument("env", metavar="ENV", help="the environment to promote (any after the entry)")
        if name in ("production", "environment"):
            cmd.add_argument(
                "--override-hold",
                default="",
                metavar="REASON",
                help="promote even during a freeze, outside the gate's windows or before its soak time: why "
                "(recorded in the audit record and in Git)",
            )
            cmd.add_argument(
                "--rc",
                default=None,
                help="what to promote: an rc tag (tag pipelines), an image tag or digest (overlays, image policies) "
                "or a source commit (branches); default: the newest verified upstream / the policy's choice",
            )
        if name == "rollback":
            cmd.add_argument("--environment", default="production")
            cmd.add_argument(
                "--to",
                default=None,
                help="tag or image value to go back to (default: the previous stable release / what ran before "
                "the last promotion); branches revert their last promotion",
            )
        cmd.set_defaults(handler=_cmd_flow)
    night = sub.add_parser("nightly", help="run the nightly flow here over a directory of pipeline files")
    night.add_argument("directory", nargs="?", default="deployments", metavar="DIR")
    night.add_argument("--no-production", action="store_true", help="stop after the release candidates")
    night.add_argument("--dry-run", action="store_true")
    night.add_argument(
        "--advance",
        choices=["all", "one-step"],
        default="all",
        help="all: each pipeline as far as its gates allow; one-step: every environment one step per night",
    )
    night.add_argument(
        "--fan-out-to",
        choices=["threads", "deployments", "task-workers"],
        default="threads",
        help="threads: every pipeline in this process (default); deployments: one promote-pipeline run per "
        "pipeline for the work pool's workers; task-workers: one background task per pipeline for Prefect's "
        "task workers (prefect task serve flows/pipelinetask.py:promote_pipeline_task)",
    )
    night.set_defaults(handler=_cmd_flow)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A Prefect server this process starts (an ephemeral one) sends no usage data unless the user asked for it;
    # on a machine without internet it would log an error for each attempt.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except PromoteError as exc:
        # Everything this tool raises on purpose names the thing and the fix: a bad pipeline file, Git,
        # credentials, a manifest, the registry, an API that refused. Say it, no traceback, exit 1.
        print(f"promote {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # the cache directory, a file that cannot be read or written
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"promote {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
