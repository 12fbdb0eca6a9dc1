"""The trace-matched IMP control (studies.reproductions.matched): arms, verdict families, tables."""

from __future__ import annotations

from pathlib import Path

from studies.reproductions import controls, matched


def _rows(seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows at one sparsity: SWAMP 1 point above IMP with a trace 25% below; "IMP, LR 0.13" as flat as
    SWAMP (within 2%) and as accurate; the other tuned arms flatter still but no more accurate than IMP."""
    rows = []
    for seed in range(seeds):
        wobble = 0.02 * (seed % 3)
        arms = {"IMP": (90.0, 100.0), "SWAMP (N=4)": (91.0, 75.0), "IMP, LR 0.13": (91.0 + wobble, 76.0 + wobble),
                "IMP, LR 0.2": (90.0 + wobble, 50.0), "IMP, batch 64": (90.0 - wobble, 60.0),
                "IMP, batch 32": (90.0, 40.0 + wobble), "SWAMP (N=4), batch 32": (91.0 - wobble, 30.0)}
        rows += [{"model": "cnn1d", "method": m, "seed": seed, "cycle": 1, "sparsity": 0.5, "test_acc": a + seed / 10,
                  "trace": t * (1 + seed / 100)} for m, (a, t) in arms.items()]
    return rows


def _verdicts(text: str, words: str) -> dict[str, str]:
    part = text.split(words, 1)[1].split("\n\n")[1]
    return {line.split(" | ")[0][2:]: line.rsplit("|", 2)[1].strip() for line in part.splitlines()
            if line.startswith("| IMP")}


def test_the_tuned_arms_train_the_grid_imp_with_one_flag_changed():
    plan = matched.runs(Path("r"), [5], Path("data"))
    grid_imp = next(cmd for cmd, run in controls.train_commands(Path("r"), [5], Path("data"))
                    if run.name == "cnn1d-imp-s5")
    assert plan["IMP", 5] == (grid_imp, Path("r/grid/cnn1d-imp-s5"))
    assert plan["SWAMP (N=4)", 5][1] == Path("r/grid/cnn1d-swamp-s5")
    for method, (name, flags) in matched.TUNED.items():
        cmd, run = plan[method, 5]
        assert run == Path(f"r/matched/cnn1d-imp-{name}-s5")
        out = cmd.index("--out")
        assert cmd[:out] == grid_imp[:out] and cmd[out + 2:] == flags, "the grid's IMP, one flag changed"
    grid_swamp = plan["SWAMP (N=4)", 5][0]
    cmd, run = plan["SWAMP (N=4), batch 32", 5]
    assert run == Path("r/matched/cnn1d-swamp-b32-s5")
    assert cmd[:out] == grid_swamp[:out] and cmd[out + 2:] == [*grid_swamp[out + 2:], "--batch-size", "32"]


def test_each_question_is_judged_by_the_one_rule():
    text = matched.tables(_rows())
    flat = _verdicts(text, "The tuned IMP is as flat as SWAMP")
    assert flat["IMP, LR 0.13"] == "**holds**" and flat["IMP, LR 0.2"] == "**does not hold**"
    lead = _verdicts(text, "SWAMP is more accurate than IMP made as flat")
    assert lead["IMP, LR 0.13"] == "**does not hold**" and lead["IMP, LR 0.2"] == "**holds**"
    better = _verdicts(text, "The flatter IMP is more accurate than IMP")
    assert better["IMP, LR 0.13"] == "**holds**" and better["IMP, batch 64"] == "**does not hold**"
    assert "| IMP, LR 0.13 | 50.0% | +1.4% |" in text, "traces relative to SWAMP's, in percent (76 + wobble vs 75)"
    few = matched.tables(_rows(seeds=3))
    assert few.count("**too few seeds**") == 3 * len(matched.TUNED) + 2
    tuned = text.split("SWAMP is more accurate than IMP when both train with batches of 32", 1)[1]
    assert "| 50.0% | +0.98 |" in tuned and "**holds**" in tuned.split("\n\n")[1], "SWAMP b32 − IMP b32, paired"
    flatter = text.split("SWAMP is flatter than IMP when both train with batches of 32", 1)[1].split("\n\n")[1]
    assert "**holds**" in flatter, "a quarter below IMP's trace at the same batch"


def test_the_cli_prints_the_csvs_tables_and_the_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "m.csv"
    matched.write_csv(_rows(), path)
    assert matched.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == matched.tables(matched.read_csv(path))
    matched.figure(_rows(), tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

