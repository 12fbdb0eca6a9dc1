"""``python -m studies.grid``: see :mod:`studies.grid.cli`."""

import runpy

from studies.grid import TARGET

runpy.run_module(TARGET, run_name="__main__", alter_sys=True)
