"""The sandbox's scenarios (sandbox/scenarios/): each lays out a first release whose files the pipeline it
generates tracks, on the branches its environments deploy from, and that pipeline passes the product's own
validation, for the simulator and for the real controllers alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.load import parse_pipeline
from sandbox.scenarios import SCENARIOS, STRATEGIES, scenario
from sandbox.world import SandboxWorld


def _pipeline(strategy: str, real: bool) -> str:
    chosen = scenario(strategy)
    return SandboxWorld.pipeline_text(
        "shop",
        "/srv/git/shop.git",
        strategy,
        kubeconfig=Path("/etc/kubeconfig"),
        health_url="http://127.0.0.1:9/health",
        registry_url="http://127.0.0.1:9",
        names=chosen.environments,
        container=chosen.real_container if real else None,
        real=real,
    )


@pytest.mark.parametrize("real", [False, True], ids=["simulated", "real"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_scenario_generates_a_pipeline_the_product_accepts(strategy: str, real: bool) -> None:
    chosen = scenario(strategy)
    pipeline = parse_pipeline(_pipeline(strategy, real), source=f"{strategy}.yaml")
    assert [env.name for env in pipeline.environments] == list(chosen.environments)
    for env in pipeline.environments:
        assert env.verify.gitops is not None
        assert env.verify.gitops.kind == chosen.controller
    files = chosen.real_files("shop", "http://127.0.0.1:9/shop.git") if real else chosen.files("shop")
    assert "src/CHANGELOG.md" in files  # what a developer's change edits


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_simulator_watches_files_the_first_release_has(strategy: str) -> None:
    chosen = scenario(strategy)
    files = chosen.files("shop")
    for env in chosen.environments:
        watched = [path for path in chosen.watched("shop", env) if path is not None]
        assert all(path in files for path in watched), (env, watched)
    if not chosen.needs_registry and chosen.release_file in files:
        # CI's image bump finds the line it rewrites
        text = files[chosen.release_file]
        assert "newTag:" in text or "  tag: " in text


def test_an_unknown_scenario_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="no sandbox scenario 'kustomize'; the scenarios: tag, branch"):
        scenario("kustomize")
    assert set(SCENARIOS) == set(STRATEGIES)
