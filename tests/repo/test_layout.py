"""The house: aggregator/ has a room per stage, data flows one way, and nothing imports in a
circle. Read from the source (ast), so a new import that breaks the order fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What each room may import from aggregator/: only itself and the stages before it.
ALLOWED = {
    "counting": {"counting"},
    "release": {"counting", "release"},
    "storage": {"counting", "release", "storage"},
}


def imports(path: Path) -> set[str]:
    """The aggregator and collector modules ``path`` imports (anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("aggregator", "collector"):
                continue
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in ("aggregator",))
    return out


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for d in ("aggregator", "collector") for p in (ROOT / d).rglob("*.py")}


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_itself_and_earlier_stages(room: str) -> None:
    wrong = {}
    for path in sorted((ROOT / "aggregator" / room).glob("*.py")):
        for name in imports(path):
            parts = name.split(".")
            later = len(parts) > 1 and parts[0] == "aggregator" and parts[1] not in ALLOWED[room]
            if later and (
                f"aggregator.{parts[1]}" in MODULES or (ROOT / "aggregator" / parts[1]).is_dir()
            ):
                wrong[path.name] = name
    assert not wrong, f"aggregator/{room}/ imports a later stage: {wrong}"


def test_the_collector_never_imports_the_aggregator() -> None:
    wrong = {
        p.name: sorted(n for n in imports(p) if n.startswith("aggregator"))
        for p in (ROOT / "collector").glob("*.py")
    }
    assert not any(wrong.values()), wrong


def test_no_module_imports_itself_in_a_circle() -> None:
    """Imports between aggregator/ and collector/ modules (inside functions too: an import
    put off to run time is still a circle a reader has to hold) form no cycle."""
    graph = {
        name: {n for n in imports(path) if n in MODULES and n != name}
        for name, path in MODULES.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
