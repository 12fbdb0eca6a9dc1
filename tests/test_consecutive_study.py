"""Connectivity of consecutive cycles' solutions (studies.reproductions.consecutive): pairs, verdicts, tables."""

from __future__ import annotations

from pathlib import Path

from studies.controls.measurements import seed_groups
from studies.reproductions import consecutive


def _rows(seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows at one cycle per model: consecutive barriers near 0.2 points for IMP and SWA alone (SWA alone
    within 0.05 of IMP, either sign) and 2 points for SWAMP; seed pairs at 40 points."""
    rows = []
    for model in consecutive.MODELS:
        for method in consecutive.METHODS:
            for seed in range(seeds):
                near = {"IMP": 0.2 + 0.02 * (seed % 3), "SWA only": 0.2 + 0.05 * (-1) ** seed,
                        "SWAMP": 2.0 + 0.02 * (seed % 3)}[method]
                rows += [{"model": model, "method": method, "pair": pair, "seed": seed, "cycle": 2, "sparsity": 0.75,
                          "error_barrier": near if pair == "consecutive" else 40.0 + seed, "loss_barrier": 0.01}
                         for pair in consecutive.PAIRS]
    return rows


def _verdicts(text: str, words: str) -> dict[str, str]:
    part = text.split(words, 1)[1].split("\n\n")[1]
    return {line.rsplit("|", 7)[0][2:].strip(" |"): line.rsplit("|", 2)[1].strip() for line in part.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| model")
            and not line.startswith("| method")}


def test_the_pairs_are_cycles_k_minus_1_and_k_and_the_controls_seed_pairs():
    a, b = consecutive.endpoints(Path("r"), "cnn1d", "SWAMP", "consecutive", 4, 3, range(12))
    assert (a, b) == (Path("r/grid/cnn1d-swamp-s4/cycle_02/average.safetensors"),
                      Path("r/grid/cnn1d-swamp-s4/cycle_03/average.safetensors"))
    seeds = [0, 3, 5, 9]
    pairs = {tuple(sorted(int(p.parent.parent.name.rsplit("-s", 1)[1]) for p in
                          consecutive.endpoints(Path("r"), "mlp", "IMP", "seed pair", s, 1, seeds))) for s in seeds}
    assert pairs == set(seed_groups(seeds, 2)), "each seed with the next, cyclically, as the controls pair them"
    swa = consecutive.endpoints(Path("r"), "transformer1d", "SWA only", "seed pair", 9, 1, seeds)
    assert swa[1] == Path("r/ingredients/transformer1d-swa-s0/cycle_01/average.safetensors")


def test_each_claim_is_judged_by_the_one_rule():
    text = consecutive.tables(_rows())
    connected = _verdicts(text, "Consecutive solutions are connected where different seeds' are not")
    assert len(connected) == 9 and set(connected.values()) == {"**holds**"}
    swamp = _verdicts(text, "SWAMP's consecutive solutions are better connected than IMP's")
    assert set(swamp.values()) == {"**does not hold**"} and len(swamp) == 3, "SWAMP's barrier is the larger here"
    swa = _verdicts(text, "SWA only's consecutive solutions are better connected than IMP's")
    assert set(swa.values()) == {"**does not hold**"}, "no difference: a 1-point gain is excluded"
    assert "| cnn1d | 75.0% | 0.22 ± 0.01 | 43.50 ± 0.87 |" in text
    few = consecutive.tables(_rows(seeds=3))
    assert few.count("**too few seeds**") == 9 + 3 + 3


def test_pairs_whose_runs_are_missing_are_left_out(tmp_path):
    assert consecutive.measure_all(tmp_path, [0, 1]) == []
    assert consecutive.read_csv(tmp_path / "consecutive.csv") == []


def test_the_cli_prints_the_csvs_tables_and_the_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "c.csv"
    consecutive.write_csv(_rows(), path)
    assert consecutive.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == consecutive.tables(consecutive.read_csv(path))
    consecutive.figure(_rows(), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
