"""The sandbox's scenarios, one per file, by the strategy name the demo and the tests pass (``--strategy``,
``create_app(strategy=...)``). This registry is the one place that picks a scenario by its name; a new strategy
is one more file and one more line below."""

from __future__ import annotations

from sandbox.scenarios.base import Scenario
from sandbox.scenarios.branch import Branch
from sandbox.scenarios.chain import CHAIN, Chain
from sandbox.scenarios.helm import Helm
from sandbox.scenarios.imagepolicy import ImagePolicy
from sandbox.scenarios.overlay import Overlay
from sandbox.scenarios.tag import Tag

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Tag(), Branch(), Overlay(), ImagePolicy(), Helm(), Chain())}
STRATEGIES: tuple[str, ...] = tuple(SCENARIOS)
REAL_STRATEGIES: tuple[str, ...] = tuple(name for name, s in SCENARIOS.items() if s.on_real_controllers)

__all__ = ["CHAIN", "REAL_STRATEGIES", "SCENARIOS", "STRATEGIES", "Scenario", "scenario"]


def scenario(strategy: str) -> Scenario:
    try:
        return SCENARIOS[strategy]
    except KeyError:
        raise ValueError(f"no sandbox scenario {strategy[:40]!r}; the scenarios: {', '.join(STRATEGIES)}") from None
