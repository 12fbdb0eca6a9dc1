"""``python -m landscape.subspace``: the subspace tool, :mod:`landscape.tools.subspace`, under its documented name.

A command name only: it imports nothing, so the package it sits in does not depend on the tool
(docs/architecture.md).
"""

import runpy

TARGET = "landscape.tools.subspace"  # the module whose main() this command runs

if __name__ == "__main__":
    runpy.run_module(TARGET, run_name="__main__", alter_sys=True)
