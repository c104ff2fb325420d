"""A whole tag-based promotion on the sandbox with instant externals, side by side in one run:

  A. the flows (promote-rc + promote-production, no approval gate) through a real Prefect server, started
     the way the product starts runs itself (flows/heartbeat.py: no wait for Prefect's heartbeat thread);
  A'. the same with Prefect's own heartbeat (as a worker runs a deployment);
  B. the same external operations called directly, without Prefect (tag, write-back, verify, checks, notes);
  C. Prefect's fixed per-flow cost: two empty flow runs (C': with Prefect's own heartbeat);
  and the nightly flow over 1 pipeline vs N pipelines (default 20).

Overhead = A - B: everything Prefect adds, its fixed per-flow cost included (target: under 0.5 s; C under
0.5 s). Nightly ratio = T(N) / T(1) (target < 4 for N = 20). ``--promotion-only`` stops after A/B/C.
``--scale`` measures Prefect's CPU per pipeline and the time ratios per fan-out mode instead (``--fan-out-scale``:
other counts for the fanned-out modes), ``--demo N`` adds the warm sandbox demo, and the run ends with every
performance target it measured, side by side: e.g. ``hack/bench --scale 1,200 --fan-out-scale 1,20 --demo 3``.

The Prefect server runs on a throwaway local PostgreSQL, as Prefect advises beyond light use and the README
advises for many pipelines. ``--database sqlite`` runs it on SQLite (``prefect server start``'s default)
to compare: SQLite answers "database is locked" while another write is in progress, the API says 503 and
the client retries after 2, 4, 8, 16, 32 s. The server also batches the task run recorder's writes
(SERVER_SETTINGS, as the README advises for many pipelines); ``--server-defaults`` runs it without.
The big nightly runs with the flow's default max_parallel unless ``--max-parallel`` says otherwise.
With each nightly the bench prints what explains the ratio: how often the server refused a write, how busy
the machine's CPUs were and how much CPU the hypervisor took away (stolen: a noisy neighbour on a shared
machine, not our work).

Run: hack/bench [--help]  (installs PostgreSQL's server programs if missing, then runs this)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import inspect
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(tempfile.mkdtemp(prefix="promote-bench-"))
PROJECT = Path(__file__).resolve().parents[1]
atexit.register(shutil.rmtree, ROOT, True)

from sandbox.prefect_server import PrefectServer, prefect_env  # noqa: E402

# The server logs each write it refused (a documented Prefect setting): the bench counts them.
os.environ["PREFECT_API_LOG_RETRYABLE_ERRORS"] = "true"
SERVER = PrefectServer(home=ROOT / "prefect")
os.environ.update(prefect_env(SERVER.home, SERVER.api_url))
os.environ["PROMOTE_CACHE_DIR"] = str(ROOT / "cache")
# Runs log at INFO, as a user's do, so the log lines they send to the server are counted and paid for; only
# the console (this bench's own output) is kept to warnings.
os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"

from kubernetes.config import new_client_from_config  # noqa: E402
from prefect import flow  # noqa: E402

from bench import prefect_rows  # noqa: E402
from bench.cpu import children_named, descendants, postmaster_pid, thread_cpu, tree_cpu  # noqa: E402
from bench.demo_controllers import run as run_demo  # noqa: E402
from flows.heartbeat import beats, runs_without_the_wait  # noqa: E402
from flows.nightly import nightly  # noqa: E402
from flows.promote_production import promote_production  # noqa: E402
from flows.promote_rc import promote_rc  # noqa: E402
from sandbox.agent import GitOpsAgent, git_cpu_seconds  # noqa: E402
from sandbox.apiserver import LocalKubeAPI, install_crds  # noqa: E402
from sandbox.postgres import PostgresUnavailableError, local_postgres  # noqa: E402
from sandbox.world import SandboxApp, SandboxWorld  # noqa: E402
from tasks import evidence  # noqa: E402
from tasks.connections import connect  # noqa: E402
from tasks.health import run_check  # noqa: E402
from tasks.strategies import strategy_for  # noqa: E402
from tasks.verification import verify_environment  # noqa: E402

REFUSAL = b"Encountered retryable exception in request"
# Prefect's task run recorder writes every task-run event in a transaction of its own (batch size 1): about
# a fifth of the server's CPU in a 20-pipeline nightly. Batched, the UI shows task states up to 1 s later.
# The README recommends the same for many pipelines.
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


NIGHTLY_MAX_PARALLEL: int = inspect.signature(nightly.fn).parameters["max_parallel"].default


@dataclass(frozen=True)
class Figure:
    """One of the performance targets (docs/operations.md) as this run measured it."""

    value: float
    target: float
    unit: str  # " s", "x" or "" (CPU-s)
    floor: float | None = None  # the best this machine allows whatever Prefect costs, where the bench knows it


FIGURES: dict[str, Figure] = {}  # in the order measured; printed together at the end


def print_targets() -> None:
    if not FIGURES:
        return
    print("\ntargets, side by side from this run (docs/operations.md):")
    print(f"  {'figure':<58} {'measured':>9} {'target':>9}")
    for name, fig in FIGURES.items():
        mark = "met" if fig.value < fig.target else "NOT met"
        measured, target = f"{fig.value:.2f}{fig.unit}", f"< {fig.target:g}{fig.unit}"
        floor = "" if fig.floor is None else f"  (floor here {fig.floor:.2f}{fig.unit}, with Prefect free)"
        print(f"  {name:<58} {measured:>9} {target:>9}  {mark}{floor}", flush=True)


@beats
@flow
def empty() -> None:
    return None


def settle(app: SandboxApp) -> None:
    while any(env.applied is None for env in app.envs):
        time.sleep(0.05)
    app.commit_change("feature")


def direct(app: SandboxApp) -> None:
    """B: the external operations of promote-rc + promote-production, without Prefect."""
    conn = connect(str(app.pipeline_file), lambda _m: None)
    pipeline, repo = conn.pipeline, conn.repo
    staging, production = pipeline.environments
    repo.fetch()
    entry = strategy_for(staging).entry(conn, staging, None)
    assert entry.tag is not None and entry.write is not None and entry.revision is not None
    values = {"version": entry.value[1:], "tag": entry.value, "commit": entry.revision}
    repo.create_tag(entry.tag.name, entry.tag.commit, "rc")
    strategy_for(staging).apply(conn, staging, entry.write)
    verify_environment(conn.kube(staging), staging, entry.revision, values)
    for check in staging.health_checks:
        assert run_check(check, values).passed
    evidence.record(repo, evidence.Record("verified", pipeline.name, "staging", entry.value, entry.revision))
    repo.fetch()
    cand = strategy_for(production).candidate(conn, production, None)
    assert cand.tag is not None and cand.release_commit is not None
    values = {"version": cand.value[1:], "tag": cand.value, "commit": cand.release_commit}
    repo.create_tag(cand.tag.name, cand.tag.commit, "stable")
    strategy_for(production).apply(conn, production, cand)
    verify_environment(conn.kube(production), production, cand.release_commit, values)
    for check in production.health_checks:
        assert run_check(check, values).passed
    evidence.record(repo, evidence.Record("promoted", pipeline.name, "production", cand.value, cand.release_commit))


SETTLE_SECONDS = 2.0  # the server finishes a run's batched writes (task run recorder: 1 s) meanwhile


def charged(fn: Callable[[], object]) -> tuple[float, float, float]:
    """(client, server, database) CPU-s of ``fn`` and of the server's work it left behind, less what the same
    processes use idle over as long (the server's own loops)."""
    idle_from = ACCOUNTS.read()
    time.sleep(SETTLE_SECONDS)
    before = ACCOUNTS.read()
    idle = [b - a for a, b in zip(idle_from, before, strict=True)]
    fn()
    time.sleep(SETTLE_SECONDS)
    after = ACCOUNTS.read()
    client, server, database = (a - b - i for a, b, i in zip(after, before, idle, strict=True))
    return client, server, database


def timed(fn: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def cpu_seconds() -> tuple[float, float, float]:
    """(busy, stolen, total) CPU-seconds of the whole machine so far, all cores (Linux /proc/stat). Stolen:
    time a hypervisor gave our vCPUs to someone else, a sign of a noisy neighbour, not of our work."""
    with Path("/proc/stat").open() as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq
    return busy / hz, steal / hz, (busy + steal + idle + iowait) / hz


@dataclass
class NightlyResult:
    seconds: float
    failed: str | None  # the nightly's failure message, if it failed
    refusals: int  # writes the Prefect server refused (HTTP 503) while it ran
    cpu_busy: float  # CPU-seconds the machine was busy (all processes) while it ran
    cpu_stolen: float  # CPU-seconds the hypervisor took away meanwhile
    cpu_total: float
    pipelines: int = 1
    client_cpu: float = 0.0  # the flow's process and its Git children, without the stand-in controllers
    server_cpu: float = 0.0  # the Prefect server process tree
    database_cpu: float = 0.0  # PostgreSQL's processes (0 on SQLite: inside the server)
    rows: prefect_rows.Rows | None = None  # what the nightly left in Prefect's database
    kinds: prefect_rows.Kinds | None = None  # the same rows by kind, with --breakdown

    @property
    def per_pipeline(self) -> float:
        return (self.client_cpu + self.server_cpu + self.database_cpu) / self.pipelines


@dataclass
class Accounts:
    """Who to charge CPU to: the Prefect server, PostgreSQL (when it runs it) and the stand-in controllers."""

    server: PrefectServer
    postgres_data: Path | None = None
    agent: GitOpsAgent | None = None
    workers: list[int] = field(default_factory=list)  # process workers: their flow runs are client work too
    database_url: str | None = None  # PostgreSQL's, when the server runs on it (else its SQLite file)
    breakdown: bool = False  # also read the rows by kind (--breakdown)

    @property
    def database(self) -> str | Path:
        return self.database_url or self.server.home / "prefect.db"

    def rows(self) -> prefect_rows.Rows:
        return prefect_rows.settled(self.database)

    def kinds(self) -> prefect_rows.Kinds | None:
        return prefect_rows.kinds(self.database) if self.breakdown else None

    def read(self) -> tuple[float, float, float]:
        """(client, server, database) CPU-s so far."""
        agent = self.agent.native_id if self.agent is not None else None
        # The Prefect server, kube-apiserver and etcd are this process's children too: not client work.
        servers = {self.server.pid} if self.server.pid is not None else set()
        servers |= children_named(os.getpid(), ("kube-apiserver", "etcd"))
        mine = tree_cpu(os.getpid(), exclude=servers)
        client = mine - (thread_cpu(agent) if agent is not None else 0.0) - git_cpu_seconds()
        # The workers (and the flow-run processes they start) are this process's descendants: in tree_cpu already.
        assert all(pid in descendants(os.getpid()) for pid in self.workers)
        server = tree_cpu(self.server.pid) if self.server.pid is not None else 0.0
        database = tree_cpu(postmaster_pid(self.postgres_data)) if self.postgres_data is not None else 0.0
        return client, server, database


ACCOUNTS = Accounts(SERVER)


def run_nightly(pipelines: Path, max_parallel: int, fan_out_to: str = "threads") -> NightlyResult:
    log_start = SERVER.log_file.stat().st_size
    count = sum(1 for entry in pipelines.iterdir() if entry.is_file())
    rows_before, kinds_before = ACCOUNTS.rows(), ACCOUNTS.kinds()
    before = cpu_seconds()
    charged_before = ACCOUNTS.read()
    started = time.perf_counter()
    state = nightly(pipelines_dir=str(pipelines), max_parallel=max_parallel, fan_out_to=fan_out_to, return_state=True)
    seconds = time.perf_counter() - started
    after = cpu_seconds()
    client, server, database = (a - b for a, b in zip(ACCOUNTS.read(), charged_before, strict=True))
    with SERVER.log_file.open("rb") as log:
        log.seek(log_start)
        refusals = log.read().count(REFUSAL)
    failed = None if state.is_completed() else str(state.message)
    busy, stolen, total = (a - b for a, b in zip(after, before, strict=True))
    rows = ACCOUNTS.rows() - rows_before  # read after the CPU: waiting for the batched writes costs none of it
    kinds_after = ACCOUNTS.kinds()
    kinds = kinds_after - kinds_before if kinds_after is not None and kinds_before is not None else None
    return NightlyResult(seconds, failed, refusals, busy, stolen, total, count, client, server, database, rows, kinds)


def describe(result: NightlyResult) -> str:
    share = result.cpu_busy / result.cpu_total
    cpu = f"CPU busy {result.cpu_busy:.0f} of {result.cpu_total:.0f} CPU-s ({share:.0%})"
    cpu += f", {result.cpu_stolen:.1f} stolen"
    text = f"{result.seconds:6.2f} s, server refused {result.refusals:3d} writes, {cpu}"
    text += (
        f"; per pipeline {result.per_pipeline:.2f} CPU-s (client {result.client_cpu / result.pipelines:.2f}"
        f" + server {result.server_cpu / result.pipelines:.2f} + database {result.database_cpu / result.pipelines:.2f})"
    )
    if result.rows is not None:
        text += f"\n      per pipeline in Prefect's database: {result.rows.per(result.pipelines)}"
    if result.kinds is not None:
        text += "\n" + result.kinds.table(result.pipelines)
    return text + (f", FAILED: {result.failed[:300]}" if result.failed else "")


def make_pipelines(world: SandboxWorld, where: Path, prefix: str, count: int) -> list[SandboxApp]:
    where.mkdir()
    apps = [world.create_app(f"{prefix}-{i}", approval=False, delay_seconds=0) for i in range(count)]
    for app in apps:
        settle(app)
        shutil.copy(app.pipeline_file, where / app.pipeline_file.name)
    return apps


def retire(world: SandboxWorld, apps: list[SandboxApp]) -> None:
    """The stand-in controllers stop watching apps whose nightly is over: they poll every environment they
    know, and on 2 cores that polling (not the product) grew with every app of every earlier round."""
    assert world.agent is not None
    done = {id(env) for app in apps for env in app.envs}
    world.agent.envs[:] = [env for env in world.agent.envs if id(env) not in done]


def overhead(world: SandboxWorld, rounds: int) -> None:
    """A, A' (Prefect's own heartbeat), B, C and C' interleaved, so all see the same machine noise."""
    flows_s, prefect_beat_s, direct_s, empty_s, empty_beat_s = [], [], [], [], []
    cpu_a: list[tuple[float, float, float]] = []
    cpu_b: list[tuple[float, float, float]] = []

    def promote(app: SandboxApp) -> None:
        promote_rc(pipeline_file=str(app.pipeline_file))
        promote_production(pipeline_file=str(app.pipeline_file))

    for i in range(rounds):
        a = world.create_app(f"flows-{i}", approval=False, delay_seconds=0)
        a2 = world.create_app(f"beat-{i}", approval=False, delay_seconds=0)
        b = world.create_app(f"direct-{i}", approval=False, delay_seconds=0)
        for app in (a, a2, b):
            settle(app)

        def ours(a: SandboxApp = a) -> None:
            with runs_without_the_wait():  # how the product starts runs itself (flows/heartbeat.py)
                cpu_a.append(charged(lambda: flows_s.append(timed(promote, a))))

        def prefects(a2: SandboxApp = a2) -> None:
            prefect_beat_s.append(timed(promote, a2))

        for measure in (ours, prefects) if i % 2 == 0 else (prefects, ours):  # neither always goes first
            measure()

        def without(b: SandboxApp = b) -> None:
            direct_s.append(timed(direct, b))

        cpu_b.append(charged(without))
        with runs_without_the_wait():
            empty_s.append(timed(lambda: (empty(), empty())))
        empty_beat_s.append(timed(lambda: (empty(), empty())))
        retire(world, [a, a2, b])
    med = statistics.median
    fa, fp, db, ec, ep = med(flows_s), med(prefect_beat_s), med(direct_s), med(empty_s), med(empty_beat_s)
    print(f"tag-based promotion (rc -> staging -> production), medians of {rounds}:")
    print(f"  A  flows through Prefect              {fa:6.2f} s")
    print(f"  A' the same, Prefect's own heartbeat   {fp:6.2f} s  ({fp / fa:.2f}x A)")
    print(f"  B  same operations, no Prefect         {db:6.2f} s")
    print(f"  C  two empty flow runs                 {ec:6.2f} s  (target < 0.5 s)")
    print(f"  C' the same, Prefect's own heartbeat   {ep:6.2f} s  ({ep / ec:.2f}x C)")
    print(f"  overhead A-B                           {fa - db:6.2f} s  (target < 0.5 s)")
    FIGURES["promotion overhead A-B"] = Figure(fa - db, 0.5, " s")
    print(f"  overhead A'-B                          {fp - db:6.2f} s  (with Prefect's own heartbeat)", flush=True)
    ca, cb = (tuple(med(part) for part in zip(*cpu, strict=True)) for cpu in (cpu_a, cpu_b))
    print(
        f"  CPU-s (client + server + database): A {sum(ca):.2f} ({ca[0]:.2f} + {ca[1]:.2f} + {ca[2]:.2f}),"
        f" B {sum(cb):.2f} ({cb[0]:.2f} + {cb[1]:.2f} + {cb[2]:.2f}); Prefect's share A-B {sum(ca) - sum(cb):.2f}",
        flush=True,
    )


def _start_worker(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker in the project's directory, in a process group of its own, its output in ``log``, charged to the
    client (it is this process's descendant) until _stop_all."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    ACCOUNTS.workers.append(proc.pid)
    return proc


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers (30 s each to finish what they run, then killed) and stop charging them."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ACCOUNTS.workers = []


@contextlib.contextmanager
def process_workers(count: int, limit: int) -> Iterator[None]:
    """A process work pool with the project's deployments and ``count`` workers of ``limit`` runs each."""
    env = {**SERVER.env(), "PROMOTE_PROJECT_DIR": str(PROJECT), "PYTHONPATH": str(PROJECT)}
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    # A deployment's run reads pipeline files only under the pipeline roots; the bench's live under ROOT.
    env["PROMOTE_PIPELINE_ROOTS"] = str(ROOT)
    prefect = [sys.executable, "-m", "prefect"]
    for args in (
        ["work-pool", "create", "promote", "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--all"],
    ):
        done = subprocess.run([*prefect, *args], cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"prefect {' '.join(args)} failed: {(done.stdout + done.stderr)[-2000:]}")
    start = [*prefect, "worker", "start", "--pool", "promote", "--limit", str(limit)]
    procs = [_start_worker([*start, "--name", f"bench-{i}"], env, ROOT / f"worker-{i}.log") for i in range(count)]
    try:
        yield
    finally:
        _stop_all(procs)


@contextlib.contextmanager
def task_workers(count: int, limit: int) -> Iterator[None]:
    """``count`` of Prefect's task workers serving the nightly's promote-pipeline task, ``limit`` runs each."""
    env = {**SERVER.env(), "PROMOTE_PROJECT_DIR": str(PROJECT), "PYTHONPATH": str(PROJECT)}
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"  # their log says when they listen
    serve = [sys.executable, "-m", "prefect", "task", "serve", "flows/pipelinetask.py:promote_pipeline_task"]
    logs = [ROOT / f"task-worker-{i}.log" for i in range(count)]
    procs = [_start_worker([*serve, "--limit", str(limit)], env, log) for log in logs]
    try:
        deadline = time.monotonic() + 180
        while not all(b"Subscribing to runs" in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                said = [
                    f"exit {p.poll()}: {log.read_text(errors='replace')[-1500:]}"
                    for p, log in zip(procs, logs, strict=True)
                ]
                raise SystemExit("the task workers did not start: " + "\n".join(said))
            time.sleep(0.2)
        yield
    finally:
        _stop_all(procs)


def own_work(world: SandboxWorld, count: int, max_parallel: int) -> float:
    """CPU-s per pipeline of the same pipelines' promotions without Prefect (B for each, ``max_parallel`` at a
    time, on fresh pipelines of their own): what a nightly costs that is not Prefect's."""
    where = ROOT / f"own-{count}"
    apps = make_pipelines(world, where, f"own{count}", count)

    def promote_all() -> None:
        with ThreadPoolExecutor(max_workers=max_parallel) as pool:
            list(pool.map(direct, apps))

    client, server, database = charged(promote_all)
    retire(world, apps)
    return (client + server + database) / count


def scale(
    world: SandboxWorld,
    counts: list[int],
    modes: list[str],
    max_parallel: int,
    workers: int,
    database: str,
    fan_out_counts: list[int] | None = None,
) -> None:
    """The nightly over 1, 20, 200... pipelines (``fan_out_counts`` for the fanned-out modes, default the same),
    in each fan-out mode; ratios to one pipeline in that mode.

    Each mode ends with what the performance targets read: Prefect's share of a pipeline's CPU at the largest
    count (the nightly's CPU-s per pipeline less the same promotions' own work without Prefect, measured beside
    it) and the largest count's time over one pipeline's."""
    print(
        f"nightly at scale, server on {database}; threads: max_parallel={max_parallel}; deployments: {workers}"
        f" process workers of {max_parallel // workers} runs each (+1 for the nightly itself); task-workers:"
        f" {workers} of {max_parallel // workers} runs each:"
    )
    print(
        f"  {'mode':<12} {'pipelines':>9} {'seconds':>8} {'ratio':>7}  CPU-s per pipeline (client + server + database)"
    )
    own_by_count: dict[int, float] = {}  # the same promotions without Prefect: once per count, for every mode
    for mode in modes:
        stack = contextlib.ExitStack()
        with stack:
            if mode == "deployments":
                stack.enter_context(process_workers(workers, max_parallel // workers + 1))
            elif mode == "task-workers":
                stack.enter_context(task_workers(workers, max_parallel // workers))
            one: float | None = None
            last: NightlyResult | None = None
            for count in counts if mode == "threads" or fan_out_counts is None else fan_out_counts:
                where = ROOT / f"scale-{mode}-{count}"
                apps = make_pipelines(world, where, f"s{modes.index(mode)}-{count}", count)  # unique per mode and count
                result = run_nightly(where, max_parallel, mode)
                retire(world, apps)
                one = result.seconds if count == 1 or one is None else one
                ratio = result.seconds / one
                split = (
                    f"{result.per_pipeline:.2f} ({result.client_cpu / count:.2f} + {result.server_cpu / count:.2f}"
                    f" + {result.database_cpu / count:.2f})"
                )
                failed = f"  FAILED: {result.failed[:200]}" if result.failed else ""
                print(f"  {mode:<12} {count:>9} {result.seconds:8.2f} {ratio:6.2f}x  {split}{failed}", flush=True)
                if result.rows is not None:
                    print(f"  {'':<12} {'':>9} per pipeline in Prefect's database: {result.rows.per(count)}")
                if result.kinds is not None:
                    print(result.kinds.table(count), flush=True)
                last = result
            if last is None or one is None:
                continue
            if last.pipelines not in own_by_count:
                own_by_count[last.pipelines] = own_work(world, last.pipelines, max_parallel)
            own = own_by_count[last.pipelines]
            share = last.per_pipeline - own
            prefix = "" if mode == "threads" else "fan-out "
            print(f"  {mode}: own work without Prefect {own:.2f} CPU-s per pipeline ({last.pipelines} side by side)")
            print(f"{prefix}cpu-s per pipeline: {share:.2f}  ({mode}: Prefect's share at {last.pipelines} pipelines)")
            print(f"{prefix}ratio {last.pipelines}/1: {last.seconds / one:.2f}  ({mode})", flush=True)
            # No nightly of N pipelines ends sooner than their own work's CPU spread over every core, even if
            # Prefect cost nothing: that over one pipeline's nightly is the best ratio this machine allows.
            cores = os.cpu_count() or 1
            floor = own * last.pipelines / cores
            print(
                f"  {mode}: ratio floor {last.pipelines}/1 here: {floor / one:.2f} (the promotions' own"
                f" {own * last.pipelines:.0f} CPU-s over {cores} cores, {floor:.1f} s, with Prefect free)",
                flush=True,
            )
            fanned = mode != "threads"
            FIGURES[f"{prefix}cpu-s per pipeline ({mode}, {last.pipelines} pipelines)"] = Figure(
                share, 2.0 if fanned else 0.3, ""
            )
            FIGURES[f"{prefix}ratio {last.pipelines}/1 ({mode})"] = Figure(
                last.seconds / one, 5.0 if fanned else 15.0, "x", floor / one
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A/B/C (the median is shown)")
    parser.add_argument("--pipelines", type=int, default=20, help="pipelines in the big nightly (default 20)")
    parser.add_argument("--nightly-runs", type=int, default=1, help="how many 1-vs-N nightly comparisons")
    parser.add_argument("--nightly-only", action="store_true", help="skip A/B/C")
    parser.add_argument("--promotion-only", action="store_true", help="only A/B/C, no nightly")
    parser.add_argument(
        "--scale",
        default="",
        help="instead of the 1-vs-N nightly: the nightly over each of these pipeline counts, e.g. 1,20,200",
    )
    parser.add_argument(
        "--fan-out",
        default="threads,deployments,task-workers",
        help="with --scale: the nightly's fan_out_to modes to compare (threads, deployments, task-workers)",
    )
    parser.add_argument(
        "--fan-out-scale",
        help="with --scale: other pipeline counts for the fanned-out modes, e.g. 1,20 (default: --scale's)",
    )
    parser.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="at the end, the warm sandbox demo (the README's first command) ROUNDS times: its median total time",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="with --scale: process workers (deployments) or task workers"
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=NIGHTLY_MAX_PARALLEL,
        help=f"the big nightly's max_parallel (default: the nightly flow's own, {NIGHTLY_MAX_PARALLEL})",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="with each nightly, what it left in Prefect's database by kind (task names, events, log lines...)",
    )
    parser.add_argument("--server-defaults", action="store_true", help="run the Prefect server without SERVER_SETTINGS")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="postgresql",
        help="the Prefect server's database: postgresql (default; what Prefect recommends beyond light use, and"
        " what the README recommends for many pipelines) or sqlite (`prefect server start`'s default)",
    )
    args = parser.parse_args(argv)
    ACCOUNTS.breakdown = args.breakdown
    # Stopped (kill, a CI timeout): unwind as on Ctrl-C, so the Prefect server, PostgreSQL and the API server
    # it started stop too instead of outliving it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    code = measure(args)
    if args.demo:  # after the bench's own servers stopped: the demo starts its own
        demo(args.demo)
    print_targets()
    return code


def demo(rounds: int) -> None:
    """The README's first command, warm (its binaries built, its database snapshot made): the median of
    ``rounds`` runs' own total time (from its start to its summary)."""
    run_demo("real", "tag")  # warm-up, not counted: it builds whatever the bench itself did not need
    totals = []
    for round_ in range(rounds):
        total, wall = run_demo("real", "tag")
        print(f"warm sandbox demo, round {round_ + 1}: total {total:.1f} s, wall {wall:.1f} s", flush=True)
        totals.append(total)
    FIGURES["warm sandbox demo (total time, median)"] = Figure(statistics.median(totals), 15.0, " s")


def measure(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.database == "postgresql":
            try:
                postgres = stack.enter_context(local_postgres())
            except PostgresUnavailableError as exc:
                raise SystemExit(
                    f"the bench runs the Prefect server on PostgreSQL: {exc};"
                    " run hack/bench (it installs it), or --database sqlite"
                ) from None
            ACCOUNTS.postgres_data = postgres.data
            ACCOUNTS.database_url = postgres.url
            os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres.url  # read by the server started below
        if not args.server_defaults:
            os.environ.update(SERVER_SETTINGS)
        api = stack.enter_context(LocalKubeAPI(binaries=LocalKubeAPI.ensure_binaries()))
        stack.enter_context(SERVER)
        admin = new_client_from_config(config_file=str(api.kubeconfig))
        install_crds(admin)
        (ROOT / "world").mkdir()
        world = SandboxWorld(root=ROOT / "world", api=admin, kubeconfig=api.kubeconfig)
        with world.running():
            assert world.agent is not None
            ACCOUNTS.agent = world.agent
            world.agent.poll_seconds = 0.02
            empty()  # warm-up: the first flow run pays imports and client setup
            if not args.nightly_only:  # and a first promotion pays the imports of the strategies and clients
                warm = world.create_app("warm-up", approval=False, delay_seconds=0)
                settle(warm)
                promote_rc(pipeline_file=str(warm.pipeline_file))
                retire(world, [warm])
            if not args.nightly_only:
                overhead(world, args.rounds)
            if args.promotion_only:
                return 0
            if args.scale:
                counts = [int(n) for n in args.scale.split(",")]
                fanned = [int(n) for n in args.fan_out_scale.split(",")] if args.fan_out_scale else None
                scale(world, counts, args.fan_out.split(","), args.max_parallel, args.workers, args.database, fanned)
                return 0
            n = args.pipelines
            parallel = args.max_parallel
            tuning = "defaults" if args.server_defaults else " ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
            print(f"nightly, 1 vs {n} pipelines (max_parallel={parallel}), server on {args.database}, {tuning}:")
            all_ones: list[float] = []
            all_many: list[float] = []
            for run in range(args.nightly_runs):
                # T(1) five times, the median counts: the nightly (started here as a worker would, with
                # Prefect's heartbeat) ends by joining a thread that sleeps in whole seconds.
                ones = []
                for i in range(5):
                    apps = make_pipelines(world, ROOT / f"one-{run}-{i}", f"night{run}-{i}", 1)
                    ones.append(run_nightly(ROOT / f"one-{run}-{i}", 1))
                    retire(world, apps)
                one = sorted(ones, key=lambda r: r.seconds)[2]
                apps = make_pipelines(world, ROOT / f"many-{run}", f"nights{run}", n)
                many = run_nightly(ROOT / f"many-{run}", parallel)
                retire(world, apps)
                each = ", ".join(f"{r.seconds:.2f}" for r in ones)
                print(f"  run {run + 1}:  1 pipeline  {describe(one)} (median of {each})")
                print(f"  run {run + 1}: {n:2d} pipelines {describe(many)}")
                print(f"  run {run + 1}: ratio {many.seconds / one.seconds:.2f}x (target < 4x)", flush=True)
                all_ones += [r.seconds for r in ones]
                all_many.append(many.seconds)
            if args.nightly_runs > 1:  # medians over every run: one noisy minute on a shared machine counts less
                t1, tn = statistics.median(all_ones), statistics.median(all_many)
                print(
                    f"  all runs: median 1 pipeline {t1:.2f} s ({len(all_ones)} runs), {n} pipelines {tn:.2f} s"
                    f" ({len(all_many)} runs): ratio {tn / t1:.2f}x (target < 4x)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
