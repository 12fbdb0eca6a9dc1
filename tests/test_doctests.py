"""The examples in the docstrings of every module of the toolkit run as written (``doctest``).

The modules are found by walking core/, training/, landscape/ and studies/ (:func:`conftest.source_modules`), so
a new module's examples run without being listed anywhere. Every ``>>>`` line of a module's source must be an
example ``doctest`` collects: an example where doctest cannot see it (in a comment, or in a string that is no
docstring) fails here instead of silently never running. Examples marked ``# doctest: +SKIP`` (they need a
run directory or a study on disk) are counted as seen, not run. Each module's examples run in an empty
folder, so that nothing they might write lands in the repository.
"""

from __future__ import annotations

import doctest
import importlib
import re

import pytest
from conftest import source_modules

MODULES = source_modules()
# Modules that are not imported, with the reason; they must hold no examples (checked below).
NOT_IMPORTED = {"studies.grid.__main__": "importing it runs the command (`python -m studies.grid`)"}


def test_every_module_is_found():
    assert len(MODULES) > 100 and {"core.pruning", "training.api", "landscape.matching", "studies.grid.cli"} <= set(
        MODULES)
    assert set(NOT_IMPORTED) <= set(MODULES), "a module listed as not imported no longer exists"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_examples_run(name, monkeypatch, tmp_path):
    written = len(re.findall(r"^[ \t#]*>>>", MODULES[name].read_text(), re.MULTILINE))
    if name in NOT_IMPORTED:
        assert written == 0, f"{name} holds examples that never run: it is not imported ({NOT_IMPORTED[name]})"
        return
    module = importlib.import_module(name)
    seen = sum(len(test.examples) for test in doctest.DocTestFinder().find(module))
    assert seen == written, f"{written - seen} of the {written} examples of {name} are where doctest does not look"
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (doctest's report above)"
