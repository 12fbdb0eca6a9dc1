"""docs/api.md's "SWAMP in your own loop" runs as written: plain PyTorch with training's public blocks, on MNIST-1D."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import DATA_DIR

API = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _example() -> tuple[str, str]:
    """The section's two Python blocks: the user's SWAMP, and its use on MNIST-1D."""
    section = API.read_text().split("## SWAMP in your own loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the section shows the loop and its use"
    return blocks[0], blocks[1]


def test_the_documented_swamp_loop_prunes_geometrically_and_holds_pruned_weights_at_zero(capsys):
    loop, use = _example()
    namespace: dict = {}
    exec(compile(loop, "docs/api.md (SWAMP in your own loop)", "exec"), namespace)
    snapshots = []

    class WatchedSWA(namespace["SWA"]):
        """The example's SWA, checking at every end of epoch that training kept the pruned weights at 0."""

        def update(self, model):
            params = dict(model.named_parameters())
            snapshots.append(all(bool((params[n][m == 0] == 0).all()) for n, m in self.masks.items()))
            return super().update(model)

    namespace["SWA"] = WatchedSWA
    assert 'mnist1d_spec("data")' in use
    exec(compile(use.replace('mnist1d_spec("data")', f"mnist1d_spec({str(DATA_DIR)!r})"), "docs/api.md", "exec"),
         namespace)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == ["cycle 0: density 1.000", "cycle 1: density 0.800",
                                                        "cycle 2: density 0.640"]
    assert all(float(line.rsplit(" ", 1)[1]) > 0.4 for line in lines), lines  # chance is 0.1
    assert len(snapshots) == 3 * 3 * 4 and all(snapshots)
    solution, masks = namespace["solution"], namespace["masks"]  # the last cycle's, at density 0.8^2
    params = dict(solution.named_parameters())
    assert set(masks) == {"0.weight", "3.weight"}
    assert all(bool((params[n][m == 0] == 0).all()) for n, m in masks.items())
