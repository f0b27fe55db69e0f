"""Imports only go down the layers, and no module imports itself back through others.

The graph is built from the source with ``ast`` (every ``import`` statement, including the lazy ones
inside functions, since a lazy import is still a dependency), so the test needs no imports of the
package and fails on a new upward import or circle before anything runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sampler_bench"

#: Layers from the bottom up: a module may import its own layer and the layers below it, never above.
#: A module belongs to the layer of the longest prefix that matches its dotted name (the package
#: ``sampler_bench`` itself, the public facade ``sb``, only by its exact name).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("sampler_bench.version", "sampler_bench.options", "sampler_bench.rng", "sampler_bench.vp",
                    "sampler_bench.hashing", "sampler_bench.compat", "sampler_bench.hardware", "sampler_bench._interrupt",
                    "sampler_bench.philox", "sampler_bench.catalog_file")),
    ("processes", ("sampler_bench.processes",)),
    ("solvers", ("sampler_bench.solvers",)),
    ("data", ("sampler_bench.data",)),
    ("models", ("sampler_bench.models",)),
    ("metrics", ("sampler_bench.metrics",)),
    ("bench", ("sampler_bench.bench",)),
    ("report", ("sampler_bench.report",)),
    ("train", ("sampler_bench.train",)),
    ("api", ("sampler_bench",)),  # sb.sample, sb.solvers, sb.schedules, sb.load_model
    ("commands", ("sampler_bench.cli", "sampler_bench.catalog", "sampler_bench.train.cli", "sampler_bench.__main__")),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of sampler_bench it imports`` (a ``from pkg import name`` of a submodule counts as it)."""
    mods = _modules()
    graph = {}
    for name, (path, is_package) in mods.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "sampler_bench":
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    targets.add(submodule if submodule in mods else target)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "sampler_bench")
        graph[name] = {t for t in targets if t != name}
    return graph


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            matches = module == p or (p != "sampler_bench" and module.startswith(p + "."))
            if matches and (best is None or len(p) > best[0]):
                best = (len(p), rank)
    assert best is not None, f"{module} is in no layer; add it to LAYERS in {__file__}"
    return best[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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


def test_every_module_belongs_to_a_layer():
    for module in _modules():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that go up the layers:\n" + "\n".join(sorted(upward))


def test_there_are_no_import_circles():
    assert _cycles(import_graph()) == []


def test_the_checker_sees_upward_imports_and_circles():
    # The test above could pass vacuously if the graph missed imports: check it on known edges.
    graph = import_graph()
    assert "sampler_bench.processes.cld" in graph["sampler_bench.solvers.cld.gddim"]
    assert "sampler_bench.rng" in graph["sampler_bench.solvers.noise"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("sampler_bench.solvers.driver") > layer_of("sampler_bench.processes.base")
