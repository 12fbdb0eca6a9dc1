"""The environment is described once: pyproject.toml, environment.yml, README and CI agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_lines = re.findall(r'^\s+- "([^"]+)"\s*$', (ROOT / "environment.yml").read_text(), flags=re.M)
    assert sorted(line for line in pip_lines if not line.startswith("-e ")) == sorted(project["dependencies"])


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert commands == ['pip install -e . && python -m training.swamp',
                        'pip install -e ".[dev]" && ruff check . && python -m pytest']
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_the_analysis_tools_start_without_plotting_or_scipy():
    """A barrier without --plot must not pay for seaborn, matplotlib, pandas or SciPy at start-up."""
    import subprocess
    import sys

    code = ("import sys, landscape.tools.barrier, landscape.tools.hessian, landscape.tools.subspace; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'seaborn', 'matplotlib', 'pandas', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
