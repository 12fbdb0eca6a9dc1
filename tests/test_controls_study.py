"""The controls grid at 12 seeds (studies.reproductions.controls): its per-seed rows, its verdicts under the one
rule, and docs/controls.md regenerated from the committed data."""

from __future__ import annotations

from pathlib import Path

import pytest

from studies.controls.measurements import Controls, Settings, seed_groups
from studies.reproductions import controls
from tests.conftest import REPOSITORY

SEEDS = list(range(6))


def _controls() -> Controls:
    """Six seeds, one cycle: particles 0.1-0.6 points apart, seed pairs 30 points, SWAMP 1 point more accurate and
    20% flatter than IMP; seed hulls 1 nat above their vertices, particle hulls 0.01 below."""
    acc = [{"model": "mlp", "method": m, "seed": s, "rewind": 2, "cycle": 0, "sparsity": 0.0,
            "test_acc": (60.0 + s + (1.0 if m == "swamp" else 0.0)) / 100} for m in ("imp", "swamp") for s in SEEDS]
    pairs = [{"model": "mlp", "seed": s, "rewind": 2, "cycle": 0, "sparsity": 0.0, "pair": [0, 1],
              "loss": 0.001, "error": 0.001 * (s + 1)} for s in SEEDS]
    seed_pairs = [{"model": "mlp", "method": m, "cycle": 0, "seeds": list(g), "sparsity": 0.0, "loss": 1.0,
                   "error": 0.30 + 0.01 * g[0], "aligned_loss": 0.1, "aligned_error": 0.05}
                  for m in ("imp", "swamp") for g in seed_groups(SEEDS, 2)]
    hulls = [{"model": "mlp", "seed": s, "cycle": 0, "sparsity": 0.0, "excess_mean": -0.01, "excess_max": -0.001,
              "frac_below": 1.0}
             for s in SEEDS]
    seed_hulls = [{"model": "mlp", "method": m, "cycle": 0, "seeds": list(g), "sparsity": 0.0,
                   "excess_mean": 1.0 + 0.01 * g[0], "excess_max": 2.0, "frac_below": 0.0}
                  for m in ("imp", "swamp") for g in seed_groups(SEEDS, 3)]
    flat = [{"model": "mlp", "method": m, "seed": s, "cycle": 0, "sparsity": 0.0,
             "raw": (100.0 + s) * (0.8 if m == "swamp" else 1.0), "normalized": None, "channel": None}
            for m in ("imp", "swamp") for s in SEEDS]
    return Controls(Settings(), {"accuracy": acc, "particle_pairs": pairs, "seed_pairs": seed_pairs,
                                 "particle_hulls": hulls, "seed_hulls": seed_hulls, "flatness": flat}, {})


def _value(rows, measure, method, seed):
    [row] = [r for r in rows if r["measure"] == measure and r["method"] == method and r["seed"] == seed]
    return row["value"]


def test_rows_are_per_seed_in_points_and_each_group_is_filed_under_the_seed_that_starts_it():
    rows = controls.rows_of(_controls())
    assert _value(rows, "test_acc", "swamp", 3) == pytest.approx(64.0)
    assert _value(rows, "particle_error", "swamp", 2) == pytest.approx(0.3)
    # seed pairs (0, 1), (1, 2), ..., (0, 5): the last group starts at seed 5
    assert [_value(rows, "seed_error", "imp", s) for s in SEEDS] == pytest.approx([30, 31, 32, 33, 34, 30])
    assert [_value(rows, "seed_hull_excess", "swamp", s) for s in SEEDS] == pytest.approx(
        [1.0, 1.01, 1.02, 1.03, 1.0, 1.0])
    assert not [r for r in rows if r["measure"] == "trace_layer"]  # no BatchNorm: no invariant trace


def _verdict(text: str, heading: str) -> str:
    """The verdict table under ``heading`` (the heading line, a blank line, the table)."""
    [section] = [part for part in text.split("\n\n**") if part.startswith(heading.removeprefix("**"))]
    return section


def test_clear_effects_hold_under_the_one_rule():
    text = controls.tables(controls.rows_of(_controls()))
    for heading in ("**The particles are connected, different seeds' solutions are not (raw)",
                    "**The particles are connected, different seeds' solutions are not (after weight matching)",
                    "**The particles' hull is low-loss", "**SWAMP is flatter than IMP: raw trace",
                    "**SWAMP is more accurate than IMP"):
        assert "**holds**" in _verdict(text, heading), heading
    assert "| mlp | 0.0% | -20.00% |" in _verdict(text, "**SWAMP is flatter than IMP: raw trace")
    # SWAMP is both flatter and 1 point more accurate on every seed: the flatter solution is the more accurate
    assert "| mlp | 0.0% | +1.00 |" in _verdict(text, "**The flatter solution is the more accurate")
    assert "| mlp | 0.0% | 62.50 ± 0.76 | 63.50 ± 0.76 | 6 |" in text


def test_a_sharper_swamp_makes_the_flatter_solution_the_less_accurate():
    state = _controls()
    for r in state.rows["flatness"]:
        r["raw"] *= 1.5 if r["method"] == "swamp" else 1.0
    section = _verdict(controls.tables(controls.rows_of(state)), "**The flatter solution is the more accurate")
    assert "| mlp | 0.0% | -1.00 |" in section and "**does not hold**" in section


def test_the_rewind_families_compare_each_rewind_point_with_the_grids_on_the_same_seed():
    state = _controls()
    for r in list(state.rows["accuracy"]):  # rewind 0: SWAMP 10 points below IMP, particles 5 points apart
        state.rows["accuracy"].append({**r, "rewind": 0, "test_acc": r["test_acc"] - (0.1 if r["method"] == "swamp"
                                                                                        else 0.0)})
    state.rows["particle_pairs"] += [{**r, "rewind": 0, "error": 0.05 + r["error"]}
                                     for r in state.rows["particle_pairs"]]
    text = controls.tables(controls.rows_of(state))
    unstable = _verdict(text, "**A ticket at rewind point r is unstable")
    assert "| mlp | 0 | 0.0% | +5.00 |" in unstable and "**holds**" in unstable
    assert "| mlp | 0 | 0.0% | -9.00 |" in _verdict(text, "**SWAMP needs a stable ticket")


def test_the_commands_train_the_grid_then_the_rewind_sweep():
    commands = controls.train_commands(Path("r"), [0, 1], Path("data"))
    runs = [run.relative_to("r").as_posix() for _, run in commands]
    assert runs[:6] == ["grid/cnn1d-imp-s0", "grid/cnn1d-swamp-s0", "grid/mlp-imp-s0", "grid/mlp-swamp-s0",
                        "grid/transformer1d-imp-s0", "grid/transformer1d-swamp-s0"]
    assert len(runs) == 2 * 2 * len(controls.GRID) + 2 * 2 * len(controls.SWEEP)
    epochs = {run.name.split("-")[0]: c[c.index("--epochs") + 1] for c, run in commands if "grid/" in run.as_posix()}
    assert epochs == {"cnn1d": "8", "mlp": "32", "transformer1d": "64"}  # each model at its capacity
    assert {c[c.index("--rewind-epochs") + 1] for c, run in commands if "grid/" in run.as_posix()} == {"2"}
    swept = [c for c, run in commands if "rewind/" in run.as_posix()]
    assert sorted({c[c.index("--rewind-epochs") + 1] for c in swept}) == ["0", "1", "4", "8"]
    assert all(c[c.index("--particles") + 1] == "4" for c, run in commands if "swamp" in run.name)


def test_the_docs_print_exactly_the_tables_of_the_committed_data():
    rows = controls.read_csv(REPOSITORY / "docs" / "data" / "controls-mnist1d.csv")
    assert len({r["seed"] for r in rows}) >= 12
    docs = (REPOSITORY / "docs" / "controls.md").read_text()
    for table in controls.tables(rows).split("\n\n"):
        assert table in docs


def test_from_csv_prints_the_tables_and_refuses_a_missing_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "controls.csv"
    rows = controls.rows_of(_controls())
    controls.write_csv(rows, path)
    assert controls.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == controls.tables(controls.read_csv(path)).strip()
    assert controls.main(["--from-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
