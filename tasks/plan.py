"""What a promotion would change in every environment, computed from Git without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.model import Pipeline, TrackImagePolicy
from tasks import candidates, release, targets
from tasks.connections import registry_tags
from tasks.gitrepo import GitRepository
from tasks.imagepolicy import select_tag


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


def plan_pipeline(repo: GitRepository, pipeline: Pipeline) -> list[EnvironmentPlan]:
    """Each environment's next version as the flows would decide it, with file diffs and new tags."""
    repo.fetch()
    plans: list[EnvironmentPlan] = []
    entry = release.rc_environment(pipeline)
    last = release.production_environment(pipeline)
    for env in pipeline.environments:
        plan = EnvironmentPlan(environment=env.name, tracks=env.tracks.kind)
        plans.append(plan)
        try:
            plan.current = candidates.current_value(repo, pipeline, env)
            if env is entry and env.tracks.kind == "tag":
                decision = release.decide_rc(repo, pipeline)
                if decision.tag is None:
                    plan.note = decision.reason
                    continue
                plan.proposed = decision.tag
                plan.tags = [decision.tag] if decision.action == "create" else []
                plan.note = f"release candidate at {decision.commit[:12]} ({decision.reason})"
                file = targets.tracked_file(env) or ""
                plan.diff = targets.plan_change(
                    env, repo.read_file(pipeline.repository.branch, file), decision.tag
                ).diff
            elif env is entry and (env is not last or env.tracks.kind != "image-policy"):
                if env.tracks.kind == "image-policy":
                    tracks = env.tracks
                    assert isinstance(tracks, TrackImagePolicy)
                    list_tags = registry_tags(env)
                    assert list_tags is not None
                    plan.proposed = select_tag(list_tags(), tracks.filter_tags, tracks.choose)
                    plan.note = "the registry's choice by policy; promote-rc writes and verifies it"
                else:
                    plan.proposed = plan.current
                    plan.note = "promote-rc verifies what it runs now"
            elif env is entry or env.tracks.kind != "tag" or env is last:
                cand = candidates.candidate_for(repo, pipeline, env, None, registry_tags=registry_tags(env))
                plan.current, plan.proposed, plan.diff = cand.previous, cand.value, cand.diff
                plan.tags = [cand.value] if env.tracks.kind == "tag" and cand.value not in repo.tags() else []
                plan.note = f"{cand.label}" + (f"; {len(cand.commits)} commit(s)" if cand.commits else "")
            else:
                plan.note = "promoted by the flows only as the rc or the last environment"
        except (release.ReleaseError, candidates.NothingToPromoteError) as exc:
            plan.note = str(exc)
    return plans
