"""The tree's layering: the results side reads records only (no trainer code is imported to build or compare a
leaderboard), and no module imports, at module level, one that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "kdcore", "tasks", "trainers")


def module_imports() -> dict[str, set[str]]:
    """Each project module's module-level imports (those under `if TYPE_CHECKING:` too) of project modules."""
    files = {
        p: ".".join(p.relative_to(ROOT).with_suffix("").parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
    }
    names = {name.removesuffix(".__init__") for name in files.values()}

    def project_module(dotted: str) -> str | None:
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for path, name in files.items():
        name = name.removesuffix(".__init__")
        body = ast.parse(path.read_text()).body
        nodes = [*body, *(inner for node in body if isinstance(node, ast.If) for inner in node.body)]
        targets = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets |= {project_module(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {
                    project_module(f"{node.module}.{a.name}") or project_module(node.module) for a in node.names
                }
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_no_module_level_import_cycle() -> None:
    graph = module_imports()
    assert {"harness.results.estimates", "harness.results.plots", "trainers.objectives"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_results_side_imports_no_trainer_code() -> None:
    script = (
        "import sys, harness.results.build, harness.compare\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'trainers'))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
