"""SWA alone and particles alone on three architectures (studies.reproductions.ingredients): arms, verdicts,
traces read from the controls grid's cache, tables."""

from __future__ import annotations

import json
from pathlib import Path

from studies.reproductions import controls, ingredients, matched


def _rows(seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows at one sparsity per model: SWA alone 30% flatter than IMP and 1 point more accurate, particles
    alone as flat and as accurate as IMP, SWAMP like SWA alone (the cnn1d pattern; the MLP's and Transformer's are
    the same here)."""
    rows = []
    for model in ingredients.MODELS:
        for seed in range(seeds):
            wobble = 0.02 * (seed % 3)
            arms = {"IMP": (90.0, 100.0), "SWA only (N=1)": (91.0 + wobble, 70.0 - wobble),
                    "particles only (N=4, no SWA)": (90.0 + wobble, 100.0 + wobble), "SWAMP (N=4)": (91.0, 70.0)}
            rows += [{"model": model, "method": m, "seed": seed, "cycle": 1, "sparsity": 0.5,
                      "test_acc": a + seed / 10, "trace": t * (1 + seed / 100)} for m, (a, t) in arms.items()]
    return rows


def _verdicts(text: str, words: str) -> dict[str, str]:
    part = text.split(words, 1)[1].split("\n\n")[1]
    return {line.split(" | ")[0][2:]: line.rsplit("|", 2)[1].strip() for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}


def test_the_arms_are_the_grids_swamp_with_one_flag_changed():
    grid = {run.name: cmd for cmd, run in controls.train_commands(Path("r"), [5], Path("data"))}
    plan = ingredients.runs(Path("r"), [5], Path("data"))
    assert {model for model, _, _ in plan} == set(controls.GRID), "all three architectures of the grid"
    for model in controls.GRID:
        swamp = grid[f"{model}-swamp-s5"]
        assert plan[model, "IMP", 5] == (grid[f"{model}-imp-s5"], Path(f"r/grid/{model}-imp-s5"))
        assert plan[model, "SWAMP (N=4)", 5] == (swamp, Path(f"r/grid/{model}-swamp-s5"))
        swa, run = plan[model, "SWA only (N=1)", 5]
        assert run == Path(f"r/ingredients/{model}-swa-s5")
        out, n = swamp.index("--out"), swamp.index("--particles")
        assert swa[:out + 1] == swamp[:out + 1] and swa[out + 1] == str(run)
        assert swa[n:] == ["--particles", "1"] and len(swa) == len(swamp), "one particle, SWA kept"
        averaged, run = plan[model, "particles only (N=4, no SWA)", 5]
        assert run == Path(f"r/ingredients/{model}-particles-s5")
        assert averaged[:out + 1] == swamp[:out + 1] and averaged[out + 2:] == [*swamp[out + 2:], "--no-swa"]


def test_each_question_is_judged_by_the_one_rule():
    text = ingredients.tables(_rows())
    swa = _verdicts(text, "SWA alone is flatter than IMP")
    assert set(swa.values()) == {"**holds**"} and len(swa) == 3
    averaged = _verdicts(text, "Averaging particles alone is flatter than IMP")
    assert set(averaged.values()) == {"**does not hold**"}
    assert set(_verdicts(text, "SWAMP is flatter than particles without SWA").values()) == {"**holds**"}
    assert set(_verdicts(text, "SWA alone is more accurate than IMP").values()) == {"**holds**"}
    assert set(_verdicts(text, "Averaging particles alone is more accurate than IMP").values()) == {"**does not hold**"}
    assert "| transformer1d | 50.0% | -30.0% |" in text.split("SWA alone is flatter than IMP", 1)[1], \
        "traces relative to IMP's, in percent (70 vs 100, before the wobble)"
    few = ingredients.tables(_rows(seeds=3))
    assert few.count("**too few seeds**") == 8 * 3, "8 questions x 3 architectures"


def test_a_trace_the_controls_grid_measured_is_read_not_measured_again(tmp_path):
    known = tmp_path / "flatness" / "cnn1d-imp-r2-s0-c01.json"
    known.parent.mkdir()
    known.write_text(json.dumps({"kind": "flatness", "row": {"raw": 55.5, "test_acc": 0.5, "sparsity": 0.5}}))
    cache = tmp_path / "cache"
    cache.mkdir()
    run = tmp_path / "no-such-run"  # measuring it would fail: the solution is not there
    value = matched.solution(run, 1, cache, tmp_path / "data", known)
    assert value == {"trace": 55.5, "test_acc": 50.0, "sparsity": 0.5}, "accuracy in percent"
    assert json.loads((cache / "no-such-run-c01.json").read_text()) == value, "cached like a measurement"
    other = tmp_path / "other-run"  # in worker processes (traces are not thread-safe), results in task order
    assert matched.solutions([(other, 1, cache, tmp_path / "data", known), (run, 1, cache, tmp_path / "data", None)],
                             jobs=2) == [value, value]
    assert ingredients._grid_cache(Path("r"), "cnn1d", "IMP", 0, 1) == Path(
        "r/analysis/controls/flatness/cnn1d-imp-r2-s0-c01.json"), "the controls grid's own cache key"
    assert ingredients._grid_cache(Path("r"), "cnn1d", "SWA only (N=1)", 0, 1) is None


def test_the_cli_prints_the_csvs_tables_and_the_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "i.csv"
    ingredients.write_csv(_rows(), path)
    assert ingredients.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ingredients.tables(ingredients.read_csv(path))
    ingredients.figure(_rows(), tmp_path / "i.png")
    assert (tmp_path / "i.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
