"""The structure the code promises: one place switches on the tracking kind, no import cycles, the floors
(``rules/`` at the bottom, importing nothing else of the project; ``pipeline/`` on it, importing only it), and the
pipeline model loads without Git, Kubernetes, Prefect or any ``tasks`` module."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("flows", "tasks", "promote", "pipeline", "rules", "webhooks", "sandbox")
DISPATCHER = ROOT / "tasks" / "strategies" / "__init__.py"
# A branch on the kind: comparing it, matching on it, or testing a model class in a condition. A bare
# `assert isinstance(env.tracks, TrackTag)` in a strategy's own module narrows the type; it decides nothing.
KIND_SWITCH = re.compile(
    r"tracks\.kind\s*(==|!=|\bin\b|\bnot in\b)|match\s+\S*tracks\.kind|\b(if|elif|and|or)\b.*isinstance\([\w.]*tracks,"
)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_the_dispatcher_is_the_only_switch_on_the_tracking_kind() -> None:
    switches = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources("flows", "tasks", "promote", "webhooks", "sandbox")
        if path != DISPATCHER
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KIND_SWITCH.search(line)
    ]
    assert switches == [], "switch on tracks.kind outside tasks/strategies/__init__.py:\n" + "\n".join(switches)
    assert "env.tracks.kind" in DISPATCHER.read_text()


def test_the_kind_switch_pattern_catches_what_it_is_meant_to() -> None:
    """The rule above would pass vacuously if the pattern were wrong: it must flag each form of a switch."""
    for line in (
        'if env.tracks.kind == "tag":',
        'is_tag = env.tracks.kind != "branch"',
        'if env.tracks.kind in ("kustomize-image", "image-policy"):',
        "match env.tracks.kind:",
        "elif isinstance(env.tracks, TrackBranch):",
    ):
        assert KIND_SWITCH.search(line), line
    assert not KIND_SWITCH.search("    assert isinstance(env.tracks, TrackTag)")


# A branch on a sandbox scenario's name: comparing ``strategy`` (or ``.strategy``), matching on it, or looking it up
# in a table of its own. The registry in sandbox/scenarios/__init__.py is the one place that picks by name.
SCENARIO_SWITCH = re.compile(
    r"\bstrategy\s*(==|!=|\bin\b|\bnot in\b)|match\s+\S*strategy\b|\.get\(\s*[\w.]*strategy\s*\)|\w\[[\w.]*strategy\]"
)
SCENARIO_REGISTRY = ROOT / "sandbox" / "scenarios" / "__init__.py"


def test_the_sandbox_picks_a_scenario_by_name_in_one_place() -> None:
    switches = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources("sandbox")
        if path != SCENARIO_REGISTRY
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SCENARIO_SWITCH.search(line)
    ]
    assert switches == [], "switch on a scenario's name outside sandbox/scenarios/__init__.py:\n" + "\n".join(switches)
    assert SCENARIO_SWITCH.search(SCENARIO_REGISTRY.read_text())


def test_the_scenario_switch_pattern_catches_what_it_is_meant_to() -> None:
    for line in (
        'if strategy == "image-policy":',
        'if self.strategy not in ("tag", "chain"):',
        'image = "x" if strategy in ("tag", "chain") else None',
        "match app.strategy:",
        '{"branch": "deploy"}.get(strategy)',
        "say(_WHAT[strategy])",
    ):
        assert SCENARIO_SWITCH.search(line), line
    for line in ("world.create_app(name, strategy=strategy, delay_seconds=delay)", "chosen = scenario(strategy)"):
        assert not SCENARIO_SWITCH.search(line), line


def test_every_scenario_has_a_file_of_its_own() -> None:
    from sandbox.scenarios import SCENARIOS

    for name, each in SCENARIOS.items():
        module = sys.modules[type(each).__module__]
        assert Path(module.__file__ or "").parent == SCENARIO_REGISTRY.parent, name
        assert module.__name__.rsplit(".", 1)[-1] == name.replace("-", ""), f"{name} lives in {module.__name__}"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Product modules ``path`` imports at run time (a ``TYPE_CHECKING`` block is not run)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tasks.strategies import files` imports the module tasks.strategies.files; `from
            # tasks.strategies.base import Candidate` imports tasks.strategies.base.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in known] or [node.module]
        found |= {name for name in names if name in known}
    return found


def test_no_import_cycles() -> None:
    modules = {_module(path): path for path in _sources(*PRODUCT)}
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    cycles: list[list[str]] = []

    def visit(name: str, stack: list[str], done: set[str]) -> None:
        if name in stack:
            cycles.append([*stack[stack.index(name) :], name])
            return
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*stack, name], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_pipeline_model_loads_without_git_kubernetes_or_prefect() -> None:
    code = "import json, sys; import pipeline.load; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"git", "kubernetes", "prefect", "httpx"}
    assert loaded & heavy == set()
    assert not any(m.split(".")[0] in ("flows", "promote", "tasks", "sandbox") for m in loaded), sorted(
        m for m in loaded if m.split(".")[0] in ("flows", "promote", "tasks", "sandbox")
    )


def _arrows(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the product modules it imports (at run time)."""
    modules = {_module(path): path for path in _sources(*PRODUCT)}
    return {
        name: _imports(path, set(modules)) - {name} for name, path in modules.items() if name.split(".")[0] == package
    }


def test_the_rules_floor_imports_nothing_else_of_the_project() -> None:
    arrows = _arrows("rules")
    assert len(arrows) >= 10, sorted(arrows)  # the floor is there
    up = {name: sorted(m for m in imported if m.split(".")[0] != "rules") for name, imported in arrows.items()}
    assert {name: found for name, found in up.items() if found} == {}


def test_the_pipeline_model_stands_on_the_rules_floor_only() -> None:
    arrows = _arrows("pipeline")
    up = {
        name: sorted(m for m in imported if m.split(".")[0] not in ("pipeline", "rules"))
        for name, imported in arrows.items()
    }
    assert {name: found for name, found in up.items() if found} == {}


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support/ (and fixtures in a conftest.py), never in a test module another
    imports: a test module is a list of tests, and importing one runs its module-level set-up twice over."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            if any(re.match(r"^tests\.(\w+\.)*test_\w+$", name) for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")  # type: ignore[attr-defined]
    assert offenders == []


def test_every_strategy_module_has_a_test_file_of_its_own() -> None:
    """A strategy (a module of tasks/strategies/ that sets a ``kind``) is tested in tests/strategies/test_<module>.py,
    against real Git, before the flow tests use it."""
    strategies = [
        p.stem for p in (ROOT / "tasks" / "strategies").glob("*.py") if re.search(r"^\s+kind = ", p.read_text(), re.M)
    ]
    assert len(strategies) == 5, strategies
    missing = [name for name in strategies if not (ROOT / "tests" / "strategies" / f"test_{name}.py").exists()]
    assert missing == []
