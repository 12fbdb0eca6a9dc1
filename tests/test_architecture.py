"""The floors of the house (docs/architecture.md), read from the code: no import circle, every arrow points down.

The graph is drawn from the source with ``ast`` (nothing is imported to draw it): every ``import`` and
``from ... import``, at module level and inside functions (an import in a function runs when the function is
called, and closes a circle as surely as one at the top). Imports under ``if TYPE_CHECKING:`` are left out:
they never run. A string in a module-level table that names a toolkit module (a registry whose entries are
imported by name when chosen: ``training.engines.ENGINES``, ``studies.grid.launchers.LAUNCHERS``, the lazy
names of ``landscape``) is an arrow for the floors too, though not for circles (the named module is imported
after the table's module has finished loading). The command aliases run their ``TARGET`` with ``runpy``, which
is no import; their own test is below. The last tests keep docs/architecture.md and the other pages, and the
docstrings' cross-references, pointing at modules and names that exist.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPOSITORY, source_modules

# Floors: core 0; training and the landscape library 1 (siblings: never each other); the landscape tools 2
# (over the library and core, not training); studies 3. Room -> the rooms it may import, its own included.
MAY_IMPORT = {
    "core": {"core"},
    "training": {"training", "core"},
    "landscape": {"landscape", "core"},
    "landscape tools": {"landscape tools", "landscape", "core"},
    "studies": {"studies", "landscape tools", "landscape", "training", "core"},
}
TOOL_ALIASES = {"landscape.align", "landscape.barrier", "landscape.hessian", "landscape.subspace"}
DOCUMENTED_ALIASES = {*TOOL_ALIASES, "training.study", "studies.grid"}

Arrows = dict[str, dict[str, int]]  # module -> {module it imports: line of the first such import}


def room(module: str) -> str:
    """The room (see :data:`MAY_IMPORT`) of a toolkit module."""
    if module == "landscape.tools" or module.startswith("landscape.tools.") or module in TOOL_ALIASES:
        return "landscape tools"
    return module.partition(".")[0]


def imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every absolute name an import statement of ``tree`` that can run imports, with its line: ``import a.b``
    gives ``a.b``, ``from a import b`` gives ``a.b`` (a submodule or a name of ``a``), relative imports resolved
    against ``module``. Statements under ``if TYPE_CHECKING:`` are left out."""
    never_run = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in never_run:
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:None if is_package else -1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def named_in_tables(tree: ast.Module, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The toolkit modules a string in a module-level table (dict, list, tuple or set) names, with its line."""
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and isinstance(statement.value, ast.Dict | ast.List
                                                                            | ast.Tuple | ast.Set):
            yield from ((node.value, node.lineno) for node in ast.walk(statement.value)
                        if isinstance(node, ast.Constant) and node.value in modules)


def toolkit_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules`` (None for torch, the standard
    library, ...)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path], tables: bool = False) -> Arrows:
    """The imports among ``modules`` (with ``tables``, also what their module-level tables name)."""
    arrows: Arrows = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        found = list(imported_names(tree, name, path.name == "__init__.py"))
        if tables:
            found += named_in_tables(tree, modules)
        targets = arrows.setdefault(name, {})
        for imported, line in found:
            target = toolkit_module(imported, modules)
            if target is not None and target != name:
                targets.setdefault(target, line)
    return arrows


def circles(arrows: Arrows) -> list[list[str]]:
    """The strongly connected components of more than one module: each a set of modules that import each other,
    directly or through others."""
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in arrows.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {module: reachable(module) for module in arrows}
    found = {frozenset(m for m in reach[start] if start in reach[m]) for start in arrows if start in reach[start]}
    return sorted(sorted(circle) for circle in found if len(circle) > 1)


def wrong_arrows(arrows: Arrows) -> list[str]:
    """Every arrow that points up, or sideways between training and the landscape library, in words."""
    return [f"{source} ({room(source)}) -> {target} ({room(target)}), line {line}"
            for source, targets in sorted(arrows.items()) for target, line in sorted(targets.items())
            if room(target) not in MAY_IMPORT[room(source)]]


def describe(circle: list[str], arrows: Arrows) -> str:
    """A circle as the arrows between its modules, each with the line of its import."""
    return "circle: " + "; ".join(f"{a} -> {b} (line {line})" for a in circle
                                   for b, line in sorted(arrows[a].items()) if b in circle)


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return source_modules()


def test_no_import_circles(modules):
    arrows = import_graph(modules)
    assert len(arrows) > 100 and sum(map(len, arrows.values())) > 300, "the graph must see the toolkit's imports"
    found = circles(arrows)
    assert not found, "\n".join(describe(circle, arrows) for circle in found)


def test_every_arrow_points_down_a_floor(modules):
    wrong = wrong_arrows(import_graph(modules, tables=True))
    assert not wrong, "imports across the floors of docs/architecture.md:\n" + "\n".join(wrong)


def test_the_checker_finds_a_circle_and_upward_and_sideways_arrows(tmp_path):
    """The checker on a small package of its own: a circle closed by a relative import inside a function, core
    importing training inside a function or naming it in a table, the landscape library importing training, and
    an import under ``if TYPE_CHECKING:``, which is no arrow."""
    files = {
        "core/__init__.py": "",
        "core/base.py": "def late():\n    from training import loop\n",
        "core/table.py": "ENGINES = {'loop': ('training.loop', 'run')}\n",
        "training/__init__.py": "",
        "training/loop.py": "import torch\nfrom . import step\n",
        "training/step.py": "def later():\n    from .loop import run\n",
        "landscape/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import training.step\n",
        "landscape/scan.py": "import training.step as s\nfrom core.base import late\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    found = source_modules(tmp_path, ("core", "training", "landscape"))
    arrows = import_graph(found)
    assert arrows["training.loop"] == {"training.step": 2} and arrows["landscape"] == {}
    assert circles(arrows) == [["training.loop", "training.step"]]
    assert describe(circles(arrows)[0], arrows) == ("circle: training.loop -> training.step (line 2); "
                                                    "training.step -> training.loop (line 2)")
    upward = "core.base (core) -> training.loop (training), line 2"
    sideways = "landscape.scan (landscape) -> training.step (training), line 1"
    assert wrong_arrows(arrows) == [upward, sideways]
    assert wrong_arrows(import_graph(found, tables=True)) == [
        upward, "core.table (core) -> training.loop (training), line 1", sideways]


def alias_target(tree: ast.Module) -> str | None:
    """The ``TARGET = "..."`` constant of a command alias (None for other modules)."""
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and [ast.unparse(t) for t in statement.targets] == ["TARGET"]
                and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
            return statement.value.value
    return None


def test_the_command_aliases_import_nothing_and_name_a_command(modules):
    """A command alias (``python -m landscape.barrier`` for :mod:`landscape.tools.barrier`, ...) imports only
    ``runpy`` (its ``__main__`` also its package, for ``TARGET``), so that the package it sits in does not depend
    on the command; its ``TARGET`` is a toolkit module with a ``main()``."""
    trees = {name: ast.parse(path.read_text()) for name, path in modules.items()}
    aliases = {name: target for name, tree in trees.items() if (target := alias_target(tree))}
    assert DOCUMENTED_ALIASES <= set(aliases)
    for name, target in aliases.items():
        assert target in modules and callable(getattr(importlib.import_module(target), "main", None)), name
        for module, allowed in ((name, {"runpy"}), (f"{name}.__main__", {"runpy", f"{name}.TARGET"})):
            if module in trees:
                imported = {n for n, _ in imported_names(trees[module], module, modules[module].stem == "__init__")}
                assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"


def resolves(name: str) -> bool:
    """Whether the dotted ``name`` is a toolkit module, or a name (a dataclass field too) inside one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise
            continue
        for part in parts[cut:]:
            if part in getattr(found, "__dataclass_fields__", {}):
                return part == parts[-1]
            if not hasattr(found, part):
                return False
            found = getattr(found, part)
        return True
    return False


TOOLKIT_NAME = re.compile(r"(?<![\w./:-])((?:core|training|landscape|studies)(?:\.\w+)+)")


def backtick_spans(markdown: str) -> list[str]:
    """The inline code spans of a Markdown text (fenced blocks left out)."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL))


def test_architecture_md_names_only_paths_that_exist():
    """Every repository path in backticks in docs/architecture.md (``core/artifacts/``, ``training/run.py``) exists."""
    text = (REPOSITORY / "docs" / "architecture.md").read_text()
    tops = {p.name for p in REPOSITORY.iterdir() if p.is_dir() and not p.name.startswith(".")}
    paths = [token for span in backtick_spans(text) for token in re.findall(r"[\w.-]+/[\w./-]*", span)
             if token.partition("/")[0] in tops]
    assert len(paths) > 40, "the page names the packages and their modules"
    missing = [p for p in paths if not (REPOSITORY / p).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    for package in ("core", "training", "landscape", "landscape/tools", "studies", "studies/grid", "studies/controls"):
        assert f"`{package}/`" in text, f"docs/architecture.md says what {package}/ is for"


def test_the_docs_name_only_modules_and_names_that_exist():
    """Every toolkit name in backticks in docs/*.md (``core.models.REGISTRY``, ``landscape.tools.align``) is a
    module or a name in one: a page does not point at what moved or went."""
    missing = [(page.name, name) for page in sorted((REPOSITORY / "docs").glob("*.md"))
               for span in backtick_spans(page.read_text()) for name in TOOLKIT_NAME.findall(span)
               if not resolves(name)]
    assert not missing, f"names that are no module and no name in one: {missing}"


def test_docstring_cross_references_name_what_exists(modules):
    """Every qualified cross-reference of a docstring (``:func:`training.resume.prepared```, ``:mod:`.cli```) is a
    module or a name in one."""
    missing = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for name in re.findall(r":(?:mod|func|class|data|meth|attr|exc|obj):`~?([\w.]+)`", path.read_text()):
            full = package + name if name.startswith(".") else name
            if TOOLKIT_NAME.fullmatch(full) and not resolves(full):
                missing.append(f"{module}: {name}")
    assert not missing, "cross-references to nothing:\n" + "\n".join(missing)
