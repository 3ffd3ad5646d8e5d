"""The floors of the pipeline, read from the source: every import (module-level and
function-local) of the stage packages and the benchmarks, checked for circles and for imports from a lower
stage to a higher one (fractaldb < shards < pretrain < finetune < benchmarks)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# lowest first; the benchmarks sit on top of every stage
STAGES = ("fractaldb", "shards", "pretrain", "finetune", "benchmarks")


def module_name(root: Path, path: Path) -> str:
    """Dotted module name of a source file under `root` (a package's __init__ is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (relative imports resolved;
    `from package import name` counts as importing package.name when that is a module)."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.add(source)
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def stage_of(module: str) -> int:
    """The floor of a module: its top-level package's place in STAGES."""
    return STAGES.index(module.split(".")[0])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import from a lower stage to a higher one."""
    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if stage_of(b) > stage_of(a)
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_stages_import_only_downwards_and_in_no_circle():
    graph = read_imports(REPO, STAGES)
    assert len(graph) > 60 and sum(len(t) for t in graph.values()) > 150  # the whole tree read
    assert upward_imports(graph) == []
    assert circles(graph) == []


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    # the reader, on a tree with both faults: function-local and relative imports count too
    for pkg in STAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "fractaldb" / "a.py").write_text("def f():\n    from fractaldb import b\n")
    (tmp_path / "fractaldb" / "b.py").write_text("from .a import f\n")
    (tmp_path / "shards" / "c.py").write_text("import pretrain.d\n")
    (tmp_path / "pretrain" / "d.py").write_text("from shards.c import x\n")
    graph = read_imports(tmp_path, STAGES)
    assert upward_imports(graph) == ["shards.c -> pretrain.d"]
    assert circles(graph) == [["fractaldb.a", "fractaldb.b"], ["pretrain.d", "shards.c"]]


def test_finetune_uses_the_shared_layer_not_pretraining_s_command_line():
    graph = read_imports(REPO, STAGES)
    assert not [m for m in graph if m.startswith("finetune") and "pretrain.cli" in graph[m]]
    assert any("pretrain.engine.options" in graph[m] for m in graph if m.startswith("finetune"))
    for pkg in STAGES:
        for path in (REPO / pkg).rglob("*.py"):
            assert "__click_params__" not in path.read_text(), path
