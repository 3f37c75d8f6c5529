"""The import structure: no circle among our modules, each module imports on its own, and the `datagen`
command starts without the heavy libraries (HEAVY below).

By hand: `python tests/test_imports.py` prints the module-level import cycles (none) and the modules
that fail to import on their own (none)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("datagen", "api", "train")


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _module_level_imports(tree: ast.Module):
    """Imports that run when the module is imported: top level, and inside top-level if/try (not TYPE_CHECKING)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]


def import_graph() -> dict[str, set[str]]:
    """module -> our modules it imports at import time (the submodule when `from pkg import submodule`)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a non-module attribute: its module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# Each module imported in a clean state of our packages (third-party modules stay loaded, so it is
# quick): a circle that only works in one import order fails here as a partially initialised module.
ALONE = """
import importlib, json, sys, traceback, warnings
warnings.simplefilter("ignore")
failed = {}
for name in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m.split(".")[0] in ("datagen", "api", "train")]:
        del sys.modules[m]
    if "sqlmodel" in sys.modules:  # our tables are defined again by the fresh models module
        sys.modules["sqlmodel"].SQLModel.metadata.clear()
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc().strip().splitlines()[-1]
print(json.dumps(failed))
"""


def failing_alone(names: list[str]) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-c", ALONE, json.dumps(names)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


# Modules that need an optional extra that `make test` does not install (vllm) or that run on import.
NOT_ALONE = {"datagen.backends.vllm_engine", "datagen.cli.__main__", "datagen.storage.migrations.env"}


def test_no_import_cycle():
    graph = import_graph()
    assert "datagen.cli" in graph and "datagen.cli.generate" in graph["datagen.cli"]  # the graph sees our modules
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_cli_and_job_modules_import_on_their_own():
    """With no cycle (above) every module imports in any order; these are imported one by one from a
    clean state anyway (the CLI modules once needed to be imported last). `python tests/test_imports.py`
    does this for every module."""
    names = sorted(m for m in modules() if m.startswith(("datagen.cli", "datagen.jobs", "api.cli")) and m not in NOT_ALONE)
    assert "datagen.jobs.kinds" in names and "datagen.cli.jobs" in names
    assert failing_alone(names) == {}


def test_every_module_imports():
    names = sorted(m for m in modules() if m.split(".")[0] in ("datagen", "api") and m not in NOT_ALONE)
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    r = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


# sqlalchemy too: `datagen --help` needs no database (a command that does imports it when it runs).
HEAVY = ("torch", "transformers", "openai", "ray", "fastapi", "alembic", "sqlalchemy", "numpy", "llama_cpp", "spacy")


def test_the_datagen_command_starts_without_heavy_libraries():
    """The installed `datagen` is api.cli:main; importing it (every command registered) loads none of these."""
    code = "import sys, api.cli; print([m for m in %r if m in sys.modules])" % (HEAVY,)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_api_process_does_not_load_the_cli():
    """Submitting a job through the job queue (what the API does) parses it without typer or our CLI."""
    code = ("import sys; from datagen.jobs import kinds; kinds.validate('generate', ['--api', 'chat', '-n', '3']);"
            "print(sorted(m for m in sys.modules if m == 'typer' or m.startswith('datagen.cli')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


if __name__ == "__main__":
    print("cycles:", cycles(import_graph()))
    print("failing alone:", failing_alone(sorted(m for m in modules() if m not in NOT_ALONE)))
