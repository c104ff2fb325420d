"""One module per way of tracking a version (``tracks.kind``), behind :func:`strategy_for`.

:func:`strategy_for` is the only place in the product that switches on the kind: flows, steps and the plan
ask the strategy (see :class:`tasks.strategies.base.Strategy` for what each one answers). A new kind is a
module here, its model in ``pipeline/model.py``, an example and a test.
"""

from __future__ import annotations

from pipeline.model import Environment
from tasks.strategies.base import Strategy
from tasks.strategies.branch import BranchStrategy
from tasks.strategies.image_policy import ImagePolicyStrategy
from tasks.strategies.kustomize_image import KustomizeImageStrategy
from tasks.strategies.tag import TagStrategy
from tasks.strategies.yaml_path import YamlPathStrategy

__all__ = ["Strategy", "strategy_for"]

_STRATEGIES: dict[str, Strategy] = {
    strategy.kind: strategy
    for strategy in (
        TagStrategy(),
        BranchStrategy(),
        KustomizeImageStrategy(),
        ImagePolicyStrategy(),
        YamlPathStrategy(),
    )
}


def strategy_for(env: Environment) -> Strategy:
    """The strategy of ``env``'s ``tracks.kind`` (the model admits only kinds listed here)."""
    return _STRATEGIES[env.tracks.kind]
