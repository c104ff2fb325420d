"""What a promotion would change in every environment, computed from Git without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.model import Pipeline
from rules.errors import NothingToDoError, RefusedError
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import strategy_for


@dataclass
class EnvironmentPlan:
    environment: str
    tracks: str
    current: str | None = None
    proposed: str | None = None
    tags: list[str] = field(default_factory=list)
    diff: str = ""
    note: str = ""
    refused: bool = False  # the flows would refuse to promote it (the note says why), not merely nothing to do
    commits: int = 0  # the commits the proposed version adds to what runs there, where the strategy knows them

    def render(self) -> str:
        head = f"{self.environment} ({self.tracks}): {self.current or '-'}"
        head += f" -> {self.proposed}" if self.proposed and self.proposed != self.current else " (no change)"
        lines = [head]
        if self.tags:
            lines.append(f"  new tags: {', '.join(self.tags)}")
        if self.note:
            lines.append(f"  {self.note}")
        lines += [f"  {line}" for line in self.diff.rstrip().splitlines()]
        return "\n".join(lines)


def plan_pipeline(repo: GitRepository, pipeline: Pipeline, *, fetch: bool = True) -> list[EnvironmentPlan]:
    """Each environment's next version as the flows would decide it, with file diffs and new tags: the entry
    as promote-rc would, every environment after it as promote-environment would (from what is verified
    upstream now, so a chain shows one step at a time). ``fetch=False``: the caller has just fetched."""
    if fetch:
        repo.fetch()
    conn = Connections(pipeline, repo, log=lambda _message: None)
    entry = pipeline.names.index(pipeline.entry.name)
    plans: list[EnvironmentPlan] = []
    for index, env in enumerate(pipeline.environments):
        strategy = strategy_for(env)
        plan = EnvironmentPlan(environment=env.name, tracks=env.tracks.kind)
        plans.append(plan)
        try:
            plan.current = strategy.current(conn, env)
            if index < entry:
                plan.note = f"left alone: versions enter this pipeline at {pipeline.entry.name}"
            elif index == entry and env is not pipeline.last:
                decided = strategy.entry(conn, env, None)
                plan.proposed = decided.value or None
                plan.tags = [decided.tag.name] if decided.tag and decided.action == "create" else []
                plan.note, plan.diff = decided.reason, decided.diff
            else:
                cand = strategy.candidate(conn, env, None)
                # The candidate's "previous" is the value before this tool's last write there, so that a re-run
                # finishes that write; once that write landed, what runs is the candidate: nothing changes.
                running = plan.current
                plan.current = running if cand.value == running else cand.previous
                plan.proposed, plan.diff, plan.commits = cand.value, cand.diff, len(cand.commits)
                plan.tags = [cand.tag.name] if cand.tag and cand.tag.name not in repo.tags() else []
                plan.note = cand.label + (f"; {len(cand.commits)} commit(s)" if cand.commits else "")
        except (RefusedError, NothingToDoError) as exc:
            plan.note = str(exc)
            plan.refused = isinstance(exc, RefusedError)
    return plans
