"""What a promotion would change in every environment, computed from Git without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from promote.pipeline import Environment, Pipeline
from tasks import release, targets
from tasks.gitrepo import GitRepository


@dataclass
class EnvironmentPlan:
    environment: str
    tracks: str
    current: str | None = None
    proposed: str | None = None
    tags: list[str] = field(default_factory=list)
    diff: str = ""
    note: str = ""

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


def _current(repo: GitRepository, pipeline: Pipeline, env: Environment) -> tuple[str | None, str]:
    file = targets.tracked_file(env)
    if file is None:
        return None, ""
    return targets.read_current(env, text := repo.read_file(pipeline.repository.branch, file)), text


def plan_pipeline(repo: GitRepository, pipeline: Pipeline) -> list[EnvironmentPlan]:
    repo.fetch()
    plans: list[EnvironmentPlan] = []
    rc_env = next((e for e in pipeline.environments if e.tracks.kind == "tag"), None)
    for index, env in enumerate(pipeline.environments):
        plan = EnvironmentPlan(environment=env.name, tracks=env.tracks.kind)
        plans.append(plan)
        if env.tracks.kind == "branch":
            source = getattr(env.tracks, "merge_from", None)
            plan.current = env.tracks.branch
            if source:
                pending = release.changes_since(repo, env.tracks.branch, source)
                plan.note = f"merge {source} into {plan.current}: {len(pending)} commit(s) to promote"
            continue
        if env.tracks.kind not in ("tag", "kustomize-image"):
            plan.note = "planned when the flow runs (chooses from the registry)"
            continue
        plan.current, text = _current(repo, pipeline, env)
        try:
            if env is rc_env:
                decision = release.decide_rc(repo, pipeline)
                if decision.tag is None:
                    plan.note = decision.reason
                    continue
                plan.proposed = decision.tag
                plan.tags = [decision.tag] if decision.action == "create" else []
                plan.note = f"release candidate at {decision.commit[:12]} ({decision.reason})"
            elif env.tracks.kind == "tag":
                upstream = pipeline.environments[index - 1]
                rc_tag, commit = release.verified_rc(repo, pipeline, upstream, None)
                plan.proposed = release.stable_tag_for(pipeline.versioning.scheme, rc_tag)
                plan.tags = [] if plan.proposed in repo.tags() else [plan.proposed]
                plan.note = f"from {rc_tag} (verified in {upstream.name}) at {commit[:12]}"
            else:
                upstream = pipeline.environments[index - 1]
                plan.proposed, _ = _current(repo, pipeline, upstream)
                plan.note = f"copies what {upstream.name} runs"
        except release.ReleaseError as exc:
            plan.note = str(exc)
            continue
        if plan.proposed and plan.proposed != plan.current:
            plan.diff = targets.plan_change(env, text, plan.proposed).diff
    return plans
