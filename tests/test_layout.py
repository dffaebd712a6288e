"""The code's layout is what the README's "Where things are" says: packages by role, imports one way, no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROLE_PACKAGES = {"pipeline/runner", "pipeline/cluster", "pipeline/model_server"}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("pipeline", "steps", "schemas")}


def _graph() -> dict[str, set[str]]:
    files = [p for top in ("pipeline", "steps", "schemas") for p in (REPO / top).rglob("*.py")]
    modules = {_module(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_readme_map_names_every_package_and_only_those():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Where things are"):]
    block = section[section.index("```\n") + 4: section.index("```", section.index("```\n") + 4)]
    named = set(re.findall(r"^([a-z_]+(?:/[a-z_]+)*)/ ", block, re.MULTILINE))
    packages = {str(p.parent.relative_to(REPO)) for top in ("pipeline", "steps", "schemas") for p in (REPO / top).rglob("__init__.py")}
    packages -= {"steps/study_definitions"}  # data, named under steps/
    assert packages - named == set(), "packages missing from the README's map"
    assert ROLE_PACKAGES <= named
    for name in named - {"tests", "images", "charts", "benchmarks"}:
        assert (REPO / name).is_dir(), f"the README's map names {name}/, which does not exist"


def test_steps_and_schemas_never_import_pipeline():
    for module, imported in _graph().items():
        if module.startswith(("steps", "schemas")):
            assert not {m for m in imported if m.startswith("pipeline")}, module


def test_the_cluster_never_imports_the_embedded_model_server():
    for module, imported in _graph().items():
        if module.startswith(("pipeline.cluster", "pipeline.runner")):
            assert not {m for m in imported if m.startswith("pipeline.model_server")}, module


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in graph[module]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else nxt)
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
