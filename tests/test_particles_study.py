"""The particle-count study (studies.reproductions.particles): run names, verdict families, tables."""

from __future__ import annotations

from studies.reproductions import mechanisms, particles
from tests.conftest import REPOSITORY


def _rows(gain_per_doubling: float, seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows: SWAMP(N) = IMP + gain_per_doubling * log2(2N) (+ a seed-dependent wobble)."""
    rows = []
    for seed in range(seeds):
        imp = 90.0 + seed / 10
        for method in particles.METHODS:
            n = 0 if method == "IMP" else int(method.split("=")[1].rstrip(")"))
            acc = imp + (gain_per_doubling * n.bit_length() + 0.05 * (seed % 3) * (n == 8) if n else 0.0)
            rows += [{"model": "cnn1d", "method": method, "seed": seed, "cycle": c, "sparsity": s, "test_acc": acc}
                     for c, s in enumerate((0.0, 0.5))]
    return rows


def _verdicts(text: str, words: str) -> list[str]:
    part = text.split(words, 1)[1].split("\n\n")[1]
    return [line.rsplit("|", 2)[1].strip() for line in part.splitlines() if line.startswith("| cnn1d")]


def test_imp_and_swamp_runs_are_the_ensembles_and_mechanisms_studies():
    assert particles.NAMES["IMP"] == mechanisms.RUN_NAMES["IMP"] == "imp-j0"
    assert particles.NAMES["SWAMP (N=1)"] == mechanisms.RUN_NAMES["SWA only (N=1)"]
    assert particles.NAMES["SWAMP (N=4)"] == mechanisms.RUN_NAMES["SWAMP (N=4)"]
    command = particles._command("SWAMP (N=8)", "cnn1d", 3, REPOSITORY / "x", False, REPOSITORY / "data")
    assert command[command.index("--particles") + 1] == "8" and command[command.index("--epochs") + 1] == "16"
    assert "--particles" not in particles._command("IMP", "cnn1d", 3, REPOSITORY / "x", False, REPOSITORY / "data")


def test_growing_gains_hold_and_a_plateau_is_judged_by_equivalence():
    growing = particles.tables(_rows(1.0))
    assert _verdicts(growing, "more accurate than IMP") == ["**holds**"] * 8  # N = 1, 2, 4, 8 at 2 sparsities
    assert _verdicts(growing, "Doubling the particles") == ["**holds**"] * 6
    assert _verdicts(growing, "levelled off") == ["**does not hold**"] * 2, "a point per doubling: no plateau"
    flat = particles.tables(_rows(0.0))
    assert _verdicts(flat, "levelled off") == ["**holds**"] * 2 and "**holds**" not in flat.split("Doubling")[1] \
        .split("levelled off")[0]
    few = particles.tables(_rows(1.0, seeds=3))
    assert few.count("**too few seeds**") == 8 + 6 + 2


def test_the_cli_prints_the_csvs_tables_and_the_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "p.csv"
    particles.write_csv(_rows(0.5), path)
    assert particles.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == particles.tables(particles.read_csv(path))
    particles.figure(_rows(0.5), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

