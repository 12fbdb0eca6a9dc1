"""The headline-claim study (studies.reproductions.ensembles): ensembles, tables and the committed data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from studies.reproductions import ensembles
from tests.conftest import DATA_DIR, REPOSITORY

COMMITTED = REPOSITORY / "docs" / "data" / "ensembles-mnist1d.csv"


def test_an_ensemble_of_one_run_is_that_runs_accuracy(tiny_run: Path):
    with open(tiny_run / "results.csv", newline="") as f:
        recorded = {int(r["cycle"]): 100 * float(r["average_test_acc"]) for r in csv.DictReader(f)}
    for cycle, acc in recorded.items():
        assert ensembles._ensemble_accuracy([tiny_run], cycle, DATA_DIR) == pytest.approx(acc, abs=1e-4)
        assert ensembles._ensemble_accuracy([tiny_run, tiny_run], cycle, DATA_DIR) == pytest.approx(acc, abs=1e-4)


def _rows(gain: float, seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows: SWAMP = IMP + gain (+ a seed-dependent wobble), the others equal to IMP."""
    rows = []
    for seed in range(seeds):
        for method in ensembles.METHODS:
            acc = 90.0 + seed * 0.1 + (gain + 0.05 * (seed % 3) if method == "SWAMP (N=4)" else 0.0)
            rows.append({"model": "cnn1d", "method": method, "seed": seed, "cycle": 0, "sparsity": 0.0,
                         "test_acc": acc})
    return rows


def test_tables_apply_the_one_rule_to_paired_differences():
    text = ensembles.tables(_rows(gain=1.0))
    sections = text.split("**\"")
    assert "| cnn1d | 0.0% | +1.04 |" in sections[1] and "**holds**" in sections[1]  # SWAMP > IMP by a point
    assert "**does not hold**" in sections[3]  # a point from the 2-ensemble: not "comparable" within 0.5
    same = ensembles.tables(_rows(gain=0.0))
    assert "**holds**" in same.split("**\"")[3] and "8/0/0" not in same.split("**\"")[3]
    few = ensembles.tables(_rows(gain=1.0, seeds=3))
    assert few.count("**too few seeds**") == len(ensembles.FAMILIES)


def test_from_csv_prints_the_tables_and_refuses_a_missing_file(tmp_path, capsys):
    path = tmp_path / "e.csv"
    ensembles.write_csv(_rows(gain=1.0), path)
    assert ensembles.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ensembles.tables(ensembles.read_csv(path))
    assert ensembles.main(["--from-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


@pytest.mark.parametrize("seeds", ["a-b", "5-2", "-1", "1000", ""])
def test_bad_seeds_are_one_line(seeds, capsys):
    with pytest.raises(SystemExit) as exit_:
        ensembles.main(["--seeds", seeds, "--from-csv", "x.csv"])
    assert exit_.value.code == 2 and "error: argument --seeds" in capsys.readouterr().err.strip().splitlines()[-1]


def test_docs_tables_are_regenerated_from_the_committed_data():
    """docs/reproductions.md prints exactly what the committed per-seed CSV gives under the one verdict rule."""
    docs = (REPOSITORY / "docs" / "reproductions.md").read_text()
    rows = ensembles.read_csv(COMMITTED)
    assert len({r["seed"] for r in rows}) >= 12
    assert ensembles.tables(rows) in docs
