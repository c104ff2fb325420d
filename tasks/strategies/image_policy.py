"""``image-policy``: Flux-style image automation. The registry's tags are filtered and chosen by policy, as
Flux's ImagePolicy does (:mod:`tasks.imagepolicy`), and written through setter markers
(``# {"$imagepolicy": "ns:name"}``) in the YAML files under ``path`` (:mod:`tasks.setters`), committed with
the pipeline's Flux ``messageTemplate``. Below the entry, the policy chooses only among the tags verified in
the environment before it; nothing matching is a clear no-op.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import Environment, TrackImagePolicy
from rules.fluxtemplate import TemplateData, render
from rules.imageupdates import UpdateResult
from rules.yamledit import ManifestError
from tasks import evidence, manifests, worktree_paths
from tasks.gitrepo import CommitResult
from tasks.imagepolicy import select_tag
from tasks.setters import MARKER_KEY, apply_to_files, reads
from tasks.strategies import files
from tasks.strategies.base import Entry, NothingToPromoteError, ReleaseError
from tasks.strategies.copied import CopiedValueStrategy

if TYPE_CHECKING:
    from tasks.connections import Connections


def _tracks(env: Environment) -> TrackImagePolicy:
    assert isinstance(env.tracks, TrackImagePolicy)
    return env.tracks


def policy_text(tracks: TrackImagePolicy) -> str:
    choose = tracks.choose
    rule = f"semver {choose.semver}" if choose.semver else f"alphabetical {choose.alphabetical}"
    rule = rule if choose.semver or choose.alphabetical else f"numerical {choose.numerical}"
    return rule if tracks.filter_tags.pattern == ".*" else f"{rule}, tags matching {tracks.filter_tags.pattern}"


def policy_commit_message(tracks: TrackImagePolicy, update: UpdateResult, pipeline: str) -> str:
    """The commit message from the environment's template, rendered as Flux renders it; the automation
    object is ``<policy namespace>/<pipeline>``."""
    namespace = tracks.policy.split(":", 1)[0]
    return render(tracks.message_template, TemplateData(namespace, pipeline, [update]))


class ImagePolicyStrategy(CopiedValueStrategy):
    kind = "image-policy"

    def image_name(self, env: Environment) -> str:
        return _tracks(env).registry.repository

    def paths(self, env: Environment) -> list[str]:
        return [_tracks(env).path]

    def read_at(self, conn: Connections, env: Environment, ref: str) -> str | None:
        """The tag the environment's setter markers hold at ``ref`` (None when no marker holds one)."""
        tracks = _tracks(env)
        repo = conn.repo
        commit = repo.resolve(ref)
        for file in repo.list_files(commit, tracks.path):
            if not reads(file):
                continue
            text = repo.read_file(commit, file)
            if MARKER_KEY not in text:
                continue
            try:
                markers = manifests.find_setter_markers(text, source=file)
            except ManifestError:
                continue  # not YAML (a Helm template): the update skips it too
            for marker in markers:
                if marker.policy != tracks.policy:
                    continue
                if marker.field == "tag":
                    return marker.value
                if marker.field == "image":
                    reference = manifests.parse_reference(marker.value, source=file)
                    if reference.new_tag is not None:
                        return reference.new_tag
        return None

    def entry(self, conn: Connections, env: Environment, bump: str | None) -> Entry:
        """The registry's choice by policy, written and then verified (raises NothingToPromoteError)."""
        cand = self.candidate(conn, env, None)
        return Entry(
            "create",
            cand.value,
            "the registry's choice by policy; promote-rc writes and verifies it",
            write=cand,
            diff=cand.diff,
            previous=cand.previous,
        )

    def choose(self, conn: Connections, env: Environment, upstream: Environment | None, requested: str | None) -> str:
        tracks = _tracks(env)
        repository = tracks.registry.repository
        if requested is not None:
            if select_tag([requested], tracks.filter_tags, tracks.choose) != requested:
                raise ReleaseError(
                    f"{requested} is outside the image policy of {env.name} ({policy_text(tracks)}); "
                    "promote a tag the policy allows, or change the policy"
                )
            if requested not in self._tags(conn, env):
                raise ReleaseError(f"{repository} has no tag {requested} in {tracks.registry.url}")
            return requested
        tags = self._tags(conn, env)
        where = ""
        if upstream is not None:
            # Choose among what passed upstream: production's policy must never pick a tag staging did not
            # run (e.g. a stable 1.4.0 while staging verified 1.4.0-rc.1 and 1.3.9).
            verified = evidence.standing_verifications(conn.repo, conn.pipeline.name, upstream.name)
            tags = [t for t in tags if t in verified]
            where = f" among the {len(tags)} verified in {upstream.name}"
        chosen = select_tag(tags, tracks.filter_tags, tracks.choose)
        if chosen is None:
            raise NothingToPromoteError(
                f"no tag of {repository} matches the policy of {env.name}{where}; nothing to promote"
            )
        return chosen

    def _tags(self, conn: Connections, env: Environment) -> list[str]:
        tracks = _tracks(env)
        tags = conn.registry(tracks.registry).list_tags(tracks.registry.repository)
        conn.log(f"[{env.name}] {len(tags)} tags in {tracks.registry.repository}")
        return tags

    def write(self, conn: Connections, env: Environment, value: str) -> CommitResult:
        """Write ``<image>:<tag>`` through the setter markers under the path and push, with the pipeline's
        message template (Flux's ``messageTemplate``) as the commit message; a no-op when every marker
        already holds it."""
        tracks = _tracks(env)
        result: dict[str, UpdateResult] = {}

        def edit(workdir: Path) -> list[str]:
            files.inside_work_tree(workdir, tracks.path)
            update = apply_to_files(workdir, tracks.path, tracks.policy, tracks.registry.image_name, value)
            result["update"] = update
            for why in update.skipped:
                conn.log(f"[{env.name}] skipped (mentions a setter marker but does not read as YAML): {why}")
            return list(update.files)

        def message() -> str:
            text = policy_commit_message(tracks, result["update"], conn.pipeline.name).rstrip()
            return f"{text}\n\n{evidence.PROMOTE_TRAILER}\n"

        return conn.repo.commit_and_push(conn.pipeline.repository.branch, edit, message)

    def planned_diff(self, conn: Connections, env: Environment, value: str) -> str:
        """The diff that writing ``value`` would make, computed on a scratch copy of the files under the
        path (nothing in the repository is touched)."""
        tracks = _tracks(env)
        repo = conn.repo
        commit = repo.resolve(conn.pipeline.repository.branch)
        if (link := repo.symlink_on_path(commit, tracks.path)) is not None:
            raise files.TargetError(worktree_paths.refusal(tracks.path, link))
        with tempfile.TemporaryDirectory(prefix="promote-plan-") as scratch:
            root = Path(scratch)
            before: dict[str, str] = {}
            for file in repo.list_files(commit, tracks.path):
                if reads(file):
                    before[file] = repo.read_file(commit, file)
                    (root / file).parent.mkdir(parents=True, exist_ok=True)
                    (root / file).write_text(before[file], encoding="utf-8")
            update = apply_to_files(root, tracks.path, tracks.policy, tracks.registry.image_name, value)
            return "".join(
                files.unified_diff(file, before[file], (root / file).read_text(encoding="utf-8"))
                for file in update.files
            )
