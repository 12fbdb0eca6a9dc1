"""The iterative-or-one-shot study (studies.reproductions.oneshot): runs, verdict families, tables."""

from __future__ import annotations

from pathlib import Path

from studies.reproductions import ensembles, mechanisms, oneshot

SPARSITY = (0.0, 0.5, 0.75, 0.875)


def _rows(seeds: int = 8) -> list[dict[str, object]]:
    """Synthetic rows: IMP = one-shot magnitude up to cycle 1, then 2 points ahead; random 10 points behind magnitude
    from cycle 1 on; SWAMP = IMP."""
    rows = []
    for seed in range(seeds):
        for cycle, sparsity in enumerate(SPARSITY):
            imp = 95.0 + seed / 10 + 0.05 * (seed % 3) * (cycle >= 2)
            magnitude = imp - (2.0 if cycle >= 2 else 0.0)
            accs = {"IMP": imp, "SWAMP (N=4)": imp, "one-shot magnitude": magnitude,
                    "one-shot random": magnitude - (10.0 if cycle >= 1 else 0.0)}
            rows += [{"model": "cnn1d", "method": m, "seed": seed, "cycle": cycle, "sparsity": sparsity,
                      "test_acc": a} for m, a in accs.items()]
    return rows


def test_imp_and_swamp_are_the_ensembles_studys_runs_and_the_baselines_run_the_one_shot_program(tmp_path):
    assert oneshot.RUNS["IMP"][1] == mechanisms.RUN_NAMES["IMP"] and oneshot.RUNS["SWAMP (N=4)"][1] == "swamp"
    program, _, flags = oneshot.RUNS["one-shot random"]
    command = ensembles.run_command(program, "cnn1d", 2, 16, Path("x"), False, Path("data"), *flags)
    assert command[2] == "training.oneshot" and command[-2:] == ["--prune-method", "random"]


def test_the_imp_family_starts_where_imp_and_one_shot_differ():
    text = oneshot.tables(_rows())
    imp = text.split("iterative pruning (IMP)")[1].split("\n\n")[1]
    assert [line.split(" | ")[1] for line in imp.splitlines()[2:]] == ["75.0%", "87.5%"], "cycle 1 is one step in both"
    assert all(line.endswith("**holds** |") for line in imp.splitlines()[2:])
    mask = text.split("magnitude mask")[1].split("\n\n")[1]
    assert [line.split(" | ")[1] for line in mask.splitlines()[2:]] == ["50.0%", "75.0%", "87.5%"]
    assert "Holm over 2)" in text.split("iterative pruning (IMP)")[1].splitlines()[0]


def test_the_cli_prints_the_csvs_tables_and_the_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "o.csv"
    oneshot.write_csv(_rows(), path)
    assert oneshot.main(["--from-csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == oneshot.tables(oneshot.read_csv(path))
    oneshot.figure(_rows(), tmp_path / "o.png")
    assert (tmp_path / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
