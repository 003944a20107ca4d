"""The house rules of docs/architecture.md, read from the source: no import cycles, every import
pointing down the layers, every problem in a package of the same rooms, and the serving plugins
free of the training stack.

Imports are read from the syntax trees of every module of the package, those inside functions
included (a late import is still a dependency), so no exception list is needed or allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from schedgym.registry import ENVIRONMENTS

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGE = {"tests", "scripts", "docs", "leaderboard", "policies", "build", ".venv", ".ci"}

# Lowest first. A module may import modules of its own layer or of a lower one, never a higher.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # "" is the top package: it only registers the environments with Gymnasium
    ("foundation", ("", "_version", "errors", "randomness", "report", "registry", "policy")),
    ("data", ("workloads", "envs.hardware", "envs.spaces")),
    ("envs", ("envs",)),
    ("runner", ("episode", "suites")),
    ("policies", ("baselines", "agents")),
    ("evaluation", ("evaluate", "leaderboard", "quickstart", "plugins")),
    ("command", ("cli", "__main__")),
)
# What a serving engine loads must not pull the training stack in (DESIGN.md §2).
PLUGIN_FORBIDDEN = ("torch", "stable_baselines3", "sb3_contrib", "gymnasium")
ROOMS = ("core", "env", "record", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["schedgym", *parts])


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_PACKAGE or any(p.startswith(".") for p in rel.parts):
            continue
        found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(path: Path, name: str) -> tuple[set[str], set[str]]:
    """(schedgym modules, other top-level packages) that the module at ``path`` imports."""
    ours, others = set(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [(base, [a.name for a in node.names])]
        else:
            continue
        for module, names in targets:
            if module == "schedgym" or module.startswith("schedgym."):
                # `from pkg import mod` imports the module pkg.mod when there is one
                subs = [f"{module}.{n}" for n in names or () if f"{module}.{n}" in MODULES]
                ours.update(subs or [module])
            else:
                others.add(module.partition(".")[0])
    return ours, others


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    rel = module.removeprefix("schedgym").removeprefix(".")
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = rel == prefix or (prefix and rel.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, level = len(prefix), i
    assert level is not None, f"{module} belongs to no layer of docs/architecture.md"
    return level


def test_the_parser_sees_the_imports_it_should():
    # a check of the checker, on modules whose imports are known
    ours, others = GRAPH["schedgym.episode"]
    assert {"schedgym.policy", "schedgym.registry", "schedgym.errors"} <= ours
    assert "gymnasium" in others
    assert "schedgym.envs.jobshop.record" in GRAPH["schedgym.envs.jobshop.env"][0]


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, (set(), set()))[0]:
            if w not in MODULES or w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_every_import_points_down_the_layers():
    wrong = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, (ours, _) in GRAPH.items()
        for target in ours
        if target in MODULES and _layer(target) > _layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_envs_never_import_agents_or_baselines():
    wrong = [
        (module, target)
        for module, (ours, _) in GRAPH.items()
        if module.startswith("schedgym.envs")
        for target in ours
        if target.startswith(("schedgym.agents", "schedgym.baselines"))
    ]
    assert not wrong


def test_plugins_never_reach_the_training_stack():
    plugins = [m for m in MODULES if m.startswith("schedgym.plugins")]
    assert plugins
    for start in plugins:
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            if module in seen or module not in MODULES:
                continue
            seen.add(module)
            ours, others = GRAPH[module]
            bad = others & set(PLUGIN_FORBIDDEN)
            assert not bad, f"{start} reaches {sorted(bad)} through {module}"
            # the top package only registers the envs; what a plugin imports is checked here
            todo.extend(o for o in ours if o != "schedgym")


@pytest.mark.parametrize("entry", ENVIRONMENTS, ids=lambda e: e.name)
def test_every_problem_has_the_same_rooms(entry):
    package = ROOT / "envs" / entry.package
    assert {p.stem for p in package.glob("*.py")} >= set(ROOMS)
    assert (ROOT / "baselines" / f"{entry.package}.py").is_file()
    assert callable(entry.module("record").validate)
    assert callable(entry.module("record").plot_record)
    assert callable(entry.module("bench").bench)
    env_module = entry.entry_point.partition(":")[0]
    assert getattr(entry.module("env"), entry.env_class).__module__ == env_module
    core = GRAPH[f"schedgym.envs.{entry.package}.core"][1]
    assert "gymnasium" not in core, "the simulator core knows nothing of Gymnasium"
