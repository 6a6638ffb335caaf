"""The layer order of ../shared/DESIGN.md, enforced: imports go downwards only and no module cycle.

Read from the source with `ast` (every import statement, also those inside functions: a lazy import
is still a dependency), so the test needs nothing installed and names the offending line.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module may import its own layer and the layers before it, never one after it.
# finetune_embodied sits above sim (it records simulated episodes as datasets) and beside ros.
LAYERS = [
    "emu_ros.core",
    "emu_ros.model",
    "emu_ros.guidance",
    "emu_ros.perception",
    "emu_ros.bridge",
    "emu_ros.sim",
    "emu_ros.report",
    "finetune_embodied",
    "emu_ros.ros",
    "emu_ros.client",
    "emu_ros.demo",
    "emu_ros.cli",
    "emu_ros.bench",
]
# Modules that are no layer of their own: the package marker (pkgutil path extension only) and the
# generated ROS interfaces, which sit below everything that uses them.
NEUTRAL = {"emu_ros", "emu_ros.msg", "emu_ros.action", "emu_ros.srv"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [*(ROOT / "emu_ros").rglob("*.py"), *(ROOT / "finetune_embodied").rglob("*.py")]
    return {_module_name(p): p for p in files if "results" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module of this repo, line) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules, members = [a.name for a in node.names], []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                mod = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            modules, members = [mod], [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in modules:
            if t.split(".")[0] in ("emu_ros", "finetune_embodied") and not _generated(t):
                found.append((t, node.lineno))   # also a module of ours that does not exist: reported
        found += [(t, node.lineno) for t in members if t in known]
    return found


def _generated(name: str) -> bool:
    return name in NEUTRAL or name.startswith(("emu_ros.msg.", "emu_ros.action.", "emu_ros.srv."))


def _layer(name: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return i
    raise AssertionError(f"module {name} belongs to no layer: add it to LAYERS in {__file__}")


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    known = set(sources)
    return {n: {t for t, _ in _imports(n, p, known) if t in known and t != n} for n, p in sources.items()}


def test_every_module_has_a_layer():
    for name in _sources():
        if name not in NEUTRAL:
            _layer(name)


def test_imports_go_downwards_only():
    sources = _sources()
    known = set(sources)
    bad = []
    for name, path in sources.items():
        if name in NEUTRAL:
            continue
        for target, line in _imports(name, path, known):
            if target in NEUTRAL:
                continue
            if target not in known:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}, which does not exist")
            elif _layer(target) > _layer(name):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} "
                           f"({LAYERS[_layer(target)]} is above {LAYERS[_layer(name)]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ importing its own submodules is how packages expose names; a submodule
    # importing its parent package back would be a cycle, and is caught as any other.
    edges = {n: {t for t in ts if not (n == t.rpartition(".")[0] and _is_package(n))} for n, ts in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").exists()


def test_checker_sees_a_violation(tmp_path):
    """The checker itself: an upward import and a two-module cycle are both reported."""
    src = tmp_path / "m.py"
    src.write_text("from emu_ros.ros.guidance_node import GuidanceNode\n")
    found = _imports("emu_ros.core.m", src, {"emu_ros.ros.guidance_node"})
    assert found == [("emu_ros.ros.guidance_node", 1)]
    assert _layer("emu_ros.ros.guidance_node") > _layer("emu_ros.core.m")


@pytest.mark.parametrize("package, forbidden", [
    ("emu_ros.model", ("emu_ros.bench", "emu_ros.guidance", "emu_ros.bridge", "emu_ros.sim", "emu_ros.ros")),
    ("emu_ros.guidance", ("emu_ros.bridge", "emu_ros.sim", "emu_ros.ros", "emu_ros.bench")),
    ("emu_ros.core", ("emu_ros.model", "emu_ros.guidance", "emu_ros.bridge", "emu_ros.sim", "emu_ros.ros")),
])
def test_importing_a_layer_loads_nothing_above_it(package, forbidden):
    """What really gets imported at run time (a fresh interpreter), not only what the source says."""
    if package == "emu_ros.model":
        pytest.importorskip("torch", reason="emu_ros.model is the torch runtime")
    code = (f"import sys, {package}; "
            f"print('\\n'.join(m for m in sys.modules if m.startswith({forbidden!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import {package} also imported:\n{out.stdout}"
    if package == "emu_ros.core":
        assert "rclpy" not in out.stdout
