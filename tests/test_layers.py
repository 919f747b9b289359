"""The layers of ARCHITECTURE.md as import rules, read from the source (AST, no import).

    cli → commands → client → retrieval, synthesis, ingest, train → embedding → imaging, db
        → config, errors

Nothing imports upward and no two modules import each other. An import counts wherever
it is written: at module level, inside a function (lazy imports of heavy or optional
code) and under ``if TYPE_CHECKING:``; only the cycle rule leaves the last out, since
those imports never run. A component is ``casebase.<first name>`` (``casebase.db``,
``casebase.client``); ``casebase`` alone is the package's public API (``__init__``).

Every command lives in ``casebase/commands/``, so the library packages sit strictly
below the client.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "casebase"

#: Modules of the bottom layer: anyone may import them, they import only each other.
BOTTOM = {"casebase.config", "casebase.errors", "casebase.progress"}
#: The library packages between the client and the embedding layer.
LIBRARY = {"casebase.ingest", "casebase.retrieval", "casebase.synthesis", "casebase.train",
           "casebase.cohort"}  # fmt: skip
#: What only the top may import: the CLI, its command modules and the client.
TOP = {"casebase", "casebase.cli", "casebase.commands", "casebase.client"}


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    target: str  # module name (a package when a name is imported from its __init__)
    kind: str  # "module", "function" or "type" (under TYPE_CHECKING)
    line: int

    def __str__(self) -> str:
        where = "" if self.kind == "module" else f" ({self.kind}-level)"
        return f"{self.importer}:{self.line} imports {self.target}{where}"


def component(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    # Alembic's migration scripts are loaded by alembic by path, not imported as modules.
    return {
        _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts
    }


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.function_depth = 0
        self.type_checking = 0
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, target: str, line: int) -> None:
        kind = "type" if self.type_checking else "function" if self.function_depth else "module"
        self.found.append(Import(self.module, target, kind, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "casebase":
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        if base.split(".")[0] != "casebase":
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in modules() else base, node.lineno)


@functools.cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for name, path in modules().items():
        collector = _Collector(name, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found.extend(collector.found)
    return tuple(found)


def violations(importers: set[str], allowed: set[str]) -> list[str]:
    """Imports made by a module of a component in ``importers`` of a component outside
    ``allowed`` (a module may always import its own component)."""
    return [
        str(imp)
        for imp in imports()
        if component(imp.importer) in importers
        and component(imp.target) not in allowed | {component(imp.importer)}
    ]


# --- the collector itself -------------------------------------------------------------


def test_the_collector_sees_every_kind_of_import() -> None:
    """The rules below are only as good as this: module-level, lazy, TYPE_CHECKING and
    from-package imports are all seen, with the right target."""
    by_importer = defaultdict(set)
    for imp in imports():
        by_importer[imp.importer].add((imp.target, imp.kind))
    assert ("casebase.imaging.vocabulary", "module") in by_importer["casebase.db.models"]
    assert ("casebase.embedding.build", "module") in by_importer["casebase.embedding.encoder"]
    assert ("casebase.embedding", "function") in by_importer["casebase.train.spaces"]
    assert ("casebase.db.spaces", "module") in by_importer["casebase.ingest.load"]  # from-pkg
    assert ("casebase.synthesis.evidence", "type") in by_importer["casebase.ingest.decode"]
    assert len(modules()) > 60 and len(imports()) > 200


# --- rules for the layers below the library: enforced now -------------------------------


def test_imaging_imports_only_config_and_errors() -> None:
    """imaging is the leaf every layer may use: image and DICOM reading, pixel conversion,
    the value enums."""
    assert violations({"casebase.imaging"}, {"casebase.config", "casebase.errors"}) == []


def test_db_imports_nothing_above_it() -> None:
    allowed = {"casebase.imaging", "casebase.config", "casebase.errors"}
    assert violations({"casebase.db"}, allowed) == []


def test_embedding_imports_only_imaging_db_config_errors() -> None:
    allowed = {"casebase.imaging", "casebase.db", "casebase.config", "casebase.errors"}
    assert violations({"casebase.embedding"}, allowed) == []


def test_bottom_modules_import_only_each_other() -> None:
    assert violations(BOTTOM, BOTTOM) == []
    assert violations({"casebase.errors", "casebase.progress"}, set()) == []


def test_library_arrows_point_one_way() -> None:
    """Among the library packages: ingest → synthesis (the labeller) → retrieval (``Hit``),
    train → retrieval (the space's encoder). The arrows that ran back up are gone:
    retrieval and train read images through ingest, and train wrote rows with ingest's
    private COPY helper; reading images is imaging's, COPY specs are db's."""
    everything = {component(name) for name in modules()}
    rules = {
        "casebase.retrieval": {"casebase.ingest", "casebase.synthesis", "casebase.train"},
        "casebase.synthesis": {"casebase.ingest", "casebase.train"},
        "casebase.train": {"casebase.ingest", "casebase.synthesis"},
        "casebase.ingest": {"casebase.train", "casebase.retrieval"},
    }
    for package, forbidden in rules.items():
        assert violations({package}, everything - forbidden) == [], package


def test_no_two_modules_import_each_other() -> None:
    """No import cycle between casebase modules, lazy imports included (a cycle through a
    function-level import is still two modules that need each other)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        if imp.kind != "type" and imp.importer != imp.target:
            graph[imp.importer].add(imp.target)
    assert _cycles(graph) == []


def test_importing_the_light_layers_loads_no_heavy_library() -> None:
    """torch, open_clip, spaCy, litellm and pydicom load only in the calls that need them."""
    light = [
        "casebase",
        "casebase.cli",
        "casebase.client",
        "casebase.imaging",
        "casebase.imaging.images",
        "casebase.imaging.values",
        "casebase.imaging.quality",
        "casebase.embedding",
        "casebase.db.models",
        "casebase.db.bulk",
        "casebase.retrieval.filters",
        "casebase.ingest.pipeline",
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {light!r}: importlib.import_module(name)\n"
        "heavy = {'torch', 'open_clip', 'spacy', 'litellm', 'pydicom'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


# --- the top: cli, commands/, client ----------------------------------------------------


def test_library_packages_never_import_the_top() -> None:
    """The library is below the client: no package of it imports cli, commands or client."""
    below_top = LIBRARY | {"casebase.imaging", "casebase.db", "casebase.embedding", *BOTTOM}
    assert violations(LIBRARY, below_top) == []


def test_client_is_imported_only_by_the_top() -> None:
    """Only the public API (``casebase``), cli and commands/ use the client."""
    importers = {
        component(imp.importer) for imp in imports() if component(imp.target) == "casebase.client"
    }
    assert importers <= {"casebase", "casebase.cli", "casebase.commands"}, importers


def test_no_two_components_import_each_other() -> None:
    """Between packages too (retrieval → client → retrieval was one, before commands/)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        a, b = component(imp.importer), component(imp.target)
        if imp.kind != "type" and a != b:
            graph[a].add(b)
    assert _cycles(graph) == []


# --- helpers ---------------------------------------------------------------------------


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component_nodes = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component_nodes.append(top)
                        if top == node:
                            break
                    if len(component_nodes) > 1:
                        found.append(sorted(component_nodes))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
