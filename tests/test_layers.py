"""The package's layers: a module imports only from its own layer or the layers below it,
and no two modules import each other. The order follows the pipeline (docs/ARCHITECTURE.md).

Every ``import`` and ``from ... import`` of a speclm module counts, including those inside
functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import speclm

ROOT = Path(speclm.__file__).resolve().parent

# Bottom to top. A top-level module that is not a package belongs to the layer named here.
LAYERS = ["core", "corpus", "tokens", "model", "train", "inference", "clusters", "methods", "report", "grid", "build", "cli"]
TOP_LEVEL = {"speclm": "core", "speclm.cli": "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    head = module.split(".")[1]
    assert head in LAYERS, f"{module}: package {head!r} has no layer; add it to LAYERS in this test"
    return head


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def known_module(name: str) -> bool:
    p = ROOT.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The speclm modules that the module at ``path`` imports."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "speclm"}
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node)
            if target.split(".")[0] != "speclm":
                continue
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{a.name}"
                out.add(sub if known_module(sub) else target)
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_the_graph_sees_the_package():
    g = graph()
    assert "speclm.train.loop" in g and "speclm.core.manifest" in g["speclm.train.loop"]
    assert "speclm.grid.experiment" in g["speclm.cli"] or any(m.startswith("speclm.grid") for m in g["speclm.grid.cli"])


def test_no_module_imports_a_layer_above_it():
    bad = []
    for module, deps in graph().items():
        mine = LAYERS.index(layer_of(module))
        for dep in deps:
            if dep == "speclm":
                continue
            if LAYERS.index(layer_of(dep)) > mine:
                bad.append(f"{module} ({layer_of(module)}) imports {dep} ({layer_of(dep)})")
    assert not bad, "imports that go up a layer:\n" + "\n".join(sorted(bad))


def test_no_two_modules_import_each_other():
    g = graph()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in g.items() for b in deps if a in g.get(b, set())})
    assert not pairs, f"modules that import each other: {pairs}"


def test_only_the_ranks_module_reads_torchrun_environment():
    readers = [module_name(p) for p in ROOT.rglob("*.py")
               if any(v in p.read_text(encoding="utf-8") for v in ('"WORLD_SIZE"', '"LOCAL_RANK"', '"RANK"'))]
    assert readers == ["speclm.core.ranks"]


@pytest.mark.parametrize("limit", [400])
def test_no_module_is_over_the_line_limit(limit):
    long = {module_name(p): n for p in ROOT.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit}
    assert not long, f"modules over {limit} lines: {long}"


def test_a_layer_violation_is_caught():
    """The checker itself can fail: an upward import in a (fake) core module is reported,
    a lazy one inside a function included."""
    src = "def f():\n    from ..grid import experiment\n    from ..train.loop import train\n"
    deps = imports_in(src, "speclm.core.probe")
    assert deps == {"speclm.grid.experiment", "speclm.train.loop"}
    assert all(LAYERS.index(layer_of(d)) > LAYERS.index(layer_of("speclm.core.probe")) for d in deps)
