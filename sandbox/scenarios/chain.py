"""A chain of four (Argo CD): release tags through dev, qa, staging and production."""

from __future__ import annotations

from typing import ClassVar

from sandbox.scenarios.layouts import application, changelog
from sandbox.scenarios.tag import Tag

CHAIN: tuple[str, ...] = ("dev", "qa", "staging", "production")


class Chain(Tag):
    name: ClassVar[str] = "chain"
    what: ClassVar[str] = "a chain of four: rc -> dev -> qa -> staging, stable tag -> production (Argo CD)"
    environments: ClassVar[tuple[str, ...]] = CHAIN

    def files(self, app: str) -> dict[str, str]:
        files = {f"apps/{env}/{app}.yaml": application(app, env, "v1.0.0") for env in self.environments}
        return files | {"src/CHANGELOG.md": changelog(app)}
