"""The layering of the repository, read from the import statements of its source files.

Every import counts, including the ones inside functions (a lazy import is still a
dependency). Package ``__init__`` files are modules of their own; importing ``a.b.c`` is an
edge to ``a.b.c`` only (not to the packages above it, which Python runs first anyway).
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ("diffjax", "experiments", "bench", "tests")


def module_files():
    mods = {}
    for top in ROOTS:
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), REPO)[:-3]
                    name = rel.replace(os.sep, ".")
                    mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = rel
    return mods


def import_graph():
    """module -> the repository modules it imports (absolute and relative imports)."""
    mods = module_files()
    graph = {}
    for name, rel in mods.items():
        tree = ast.parse(open(os.path.join(REPO, rel + ".py")).read())
        package = name if rel.endswith("__init__") else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    for cand in (f"{base}.{alias.name}", base):
                        if cand in mods:
                            out.add(cand)
                            break
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in mods}
        graph[name] = out - {name}
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_imports(graph):
    # the checker itself: known edges are found (absolute, from-import and lazy imports)
    assert "experiments.common" in graph["experiments.train"]
    assert "experiments.tasks.base" in graph["experiments.tasks.gaussian"]
    assert "diffjax.solvers" in graph["diffjax"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_library_does_not_import_the_launchers(graph):
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("experiments", "bench", "tests"))
           for m, deps in graph.items() if m.split(".")[0] == "diffjax"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_common_imports_no_task(graph):
    # experiments.common holds config I/O, the Experiment wiring and map_batches; tasks
    # build on it, never the other way round.
    assert not {d for d in graph["experiments.common"] if d.startswith("experiments.")}
    launcher_deps = graph["experiments.train"] | graph["experiments.sample"] | \
        graph["experiments.evaluate"]
    assert not {d for d in launcher_deps if d.startswith("experiments.tasks.")}, launcher_deps


def test_training_does_not_import_models(graph):
    # diffjax.training is independent of what is trained; backend workarounds that touch
    # the model's computation live in diffjax.platform, below both.
    bad = {m: sorted(d for d in deps if d.startswith("diffjax.models"))
           for m, deps in graph.items() if m.startswith("diffjax.training")}
    assert {m: d for m, d in bad.items() if d} == {}
    assert not {d for d in graph["diffjax.platform"] if d.startswith("diffjax.")}
