"""The house's rooms and doors (DESIGN.md), read from the import statements of every source module:
no import cycle; `contract` imports neither side; `training` and `service` never import each other; the
client (`aecodec`) imports only itself. Imports inside functions and under TYPE_CHECKING count too, so a
cycle cannot hide there."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("aecodec", "contract", "service", "training")
#: package → the project packages it may import
ALLOWED = {
    "aecodec": {"aecodec"},
    "contract": {"contract"},
    "service": {"service", "contract"},
    "training": {"training", "contract"},
}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports (`from pkg import sub` names the submodule when there is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found |= subs or {node.module}
            if len(subs) < len(node.names):
                found.add(node.module)
    resolved = set()
    for name in found:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            resolved.add(name)
    return resolved


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_the_scan_sees_the_project():
    graph = _graph()
    assert {"contract.entropy", "service.inference.codec", "training.train", "aecodec.sync"} <= graph.keys()
    assert "contract.entropy" in graph["service.inference.codec"]


def test_packages_import_only_what_they_may():
    wrong = sorted((name, dep) for name, deps in _graph().items() for dep in deps
                   if dep.split(".")[0] not in ALLOWED[name.split(".")[0]])
    assert not wrong, wrong


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, cycles
