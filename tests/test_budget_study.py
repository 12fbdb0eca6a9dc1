"""The training-budget study (studies.reproductions.budget): run names, verdict families, tables."""

from __future__ import annotations

from studies.reproductions import budget, ensembles

SPARSITIES = (0.0, 0.5)


def _rows(gains: dict[int, float], seeds: int = 8, equal_cost: float = -1.0) -> list[dict[str, object]]:
    """Synthetic rows: IMP@E = 90 + seed / 10; SWAMP@E = IMP@E + gains[E] (+ a seed-dependent wobble); IMP@4E =
    SWAMP@E - ``equal_cost``."""
    rows = []
    for e in budget.BUDGETS:
        for seed in range(seeds):
            imp = 90.0 + seed / 10
            swamp = imp + gains[e] + 0.05 * (seed % 3)
            for cycle, sparsity in enumerate(SPARSITIES):
                for method, acc in (("IMP", imp), ("SWAMP (N=4)", swamp), ("IMP x4 epochs", swamp - equal_cost)):
                    rows.append({"model": "cnn1d", "epochs": e, "method": method, "seed": seed, "cycle": cycle,
                                 "sparsity": sparsity, "test_acc": acc})
    return rows


def _section(text: str, words: str) -> list[str]:
    """The verdict rows of the table whose heading contains ``words``."""
    part = text.split(words, 1)[1].split("\n\n")[1]
    return [line for line in part.splitlines() if line.startswith("| cnn1d")]


def test_runs_shared_with_the_ensembles_study_keep_its_names():
    base = ensembles.MODELS["cnn1d"]
    assert budget.run_name("cnn1d", "imp", base) == "cnn1d-imp-j0"  # the ensembles study's IMP of seed s
    assert budget.run_name("cnn1d", "imp", 4 * base) == "cnn1d-imp4x"
    assert budget.run_name("cnn1d", "swamp", base) == "cnn1d-swamp"
    assert budget.run_name("cnn1d", "swamp", 4) == "cnn1d-swamp-e4" and budget.run_name("cnn1d", "imp", 32) == \
        "cnn1d-imp-e32"
    arms = budget._arms("cnn1d")
    assert arms[4, "IMP x4 epochs"] == ("imp", 16) and arms[16, "IMP x4 epochs"] == ("imp", 64)


def test_each_family_judges_its_paired_differences_by_the_one_rule():
    text = budget.tables(_rows({4: 2.0, 8: 1.0, 16: -0.04}))  # at 16 epochs a mean gain of +0.004
    same = _section(text, "at the same epochs per cycle")
    assert [line.split(" | ")[1] for line in same] == ["4", "4", "8", "8", "16", "16"]
    assert [line.rsplit("|", 2)[1].strip() for line in same] == ["**holds**"] * 4 + ["**does not hold**"] * 2
    assert "| +2.04 |" in same[0] and "8/0/0" in same[0]  # mean of 2 + 0.05 (seed % 3) over seeds 0-7
    cost = _section(text, "at equal training compute")
    assert all(line.endswith("| 0/0/8 | 0 | **does not hold** |") for line in cost), "IMP x4 a point ahead"
    shrink = _section(text, "larger with shorter cycles")
    assert len(shrink) == 4 and all("**holds**" in line for line in shrink)
    assert "| cnn1d | 4 | 0.0% | +2.04 |" in shrink[0], "(SWAMP - IMP)@4 - (SWAMP - IMP)@16, per seed"
    assert "Holm over 6)" in text.split("at the same epochs per cycle")[1].split("\n")[0]


def test_too_few_seeds_decide_nothing_and_the_cli_prints_the_csvs_tables(tmp_path, capsys):
    few = budget.tables(_rows({4: 2.0, 8: 1.0, 16: 0.0}, seeds=3))
    assert few.count("**too few seeds**") == 6 + 6 + 4 and "**holds**" not in few
    path = tmp_path / "b.csv"
    budget.write_csv(_rows({4: 1.0, 8: 0.5, 16: 0.0}), path)
    assert budget.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == budget.tables(budget.read_csv(path))
    assert budget.main(["--from-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_the_figure_is_a_png_with_one_line_per_budget(tmp_path):
    budget.figure(_rows({4: 2.0, 8: 1.0, 16: 0.0}), tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

