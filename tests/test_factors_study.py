"""One factor at a time on three architectures (studies.reproductions.factors): runs, pairs, verdicts."""

from __future__ import annotations

from pathlib import Path

from studies.controls.measurements import seed_groups
from studies.reproductions import controls, factors


def test_the_transplanted_runs_are_the_grids_imp_with_masks_or_initial_weights_changed():
    grid = {run.name: cmd for cmd, run in controls.train_commands(Path("r"), [5], Path("data"))}
    plan = factors.runs(Path("r"), [5], Path("data"))
    for model in controls.GRID:
        imp = grid[f"{model}-imp-s5"]
        at = imp.index("--out")
        for name, donor, extra in (("imp-on-swamp-masks", f"r/grid/{model}-swamp-s5", []),
                                   ("imp-init", f"r/grid/{model}-imp-s5", ["--init-seed", "1005"])):
            cmd, run = plan[model, name, 5]
            assert run == Path(f"r/factors/{model}-{name}-s5")
            assert cmd[2] == "training.transplant" and imp[2] == "training.imp"
            assert cmd[3:at] == imp[3:at], "the grid IMP's seed, model, schedule and ticket"
            assert cmd[at + 2:] == [*imp[at + 2:], "--particles", "1", "--no-swa", "--masks-from", donor, *extra]


def test_each_pair_differs_in_its_named_factor():
    out, seeds = Path("r"), [0, 4, 7]
    order = factors.endpoints(out, "mlp", "batch order only", 4, 2, seeds)
    assert [p.name for p in order] == ["particle_00.safetensors", "particle_01.safetensors"]
    assert order[0].parent == Path("r/ingredients/mlp-particles-s4/cycle_02"), "particles without SWA"
    imp = Path("r/grid/mlp-imp-s4/cycle_02/average.safetensors")
    assert factors.endpoints(out, "mlp", "mask only", 4, 2, seeds) == (
        imp, Path("r/factors/mlp-imp-on-swamp-masks-s4/cycle_02/average.safetensors"))
    assert factors.endpoints(out, "mlp", "initialisation only", 4, 2, seeds) == (
        imp, Path("r/factors/mlp-imp-init-s4/cycle_02/average.safetensors"))
    pairs = {tuple(sorted(int(p.parent.parent.name.rsplit("-s", 1)[1])
                          for p in factors.endpoints(out, "mlp", "all four", s, 2, seeds))) for s in seeds}
    assert pairs == set(seed_groups(seeds, 2)), "the controls' seed pairs"


def test_a_factor_breaks_connectivity_when_its_barrier_exceeds_the_particles_by_a_point():
    rows = [{"model": model, "pair": pair, "seed": s, "cycle": 1, "sparsity": 0.5,
             "error_barrier": {"batch order only": 0.2, "mask only": 0.2 + 0.05 * (-1) ** s,
                               "initialisation only": 30.0, "all four": 50.0}[pair] + 0.03 * (s % 3),
             "loss_barrier": 0.01}
            for model in factors.MODELS for pair in factors.PAIRS for s in range(8)]
    text = factors.tables(rows)
    for words, verdict in (("their mask only", "**does not hold**"), ("their initial weights only", "**holds**"),
                           ("all four factors", "**holds**")):
        part = text.split(f"Solutions that differ in {words}", 1)[1].split("\n\n")[1].splitlines()[2:]
        assert len(part) == 3 and all(line.endswith(f"| {verdict} |") for line in part), (words, part)


def test_the_cli_prints_the_csvs_tables(tmp_path, capsys):
    rows = [{"model": "cnn1d", "pair": p, "seed": s, "cycle": 1, "sparsity": 0.5, "error_barrier": 1.0 + s,
             "loss_barrier": 0.01} for p in factors.PAIRS for s in range(6)]
    factors.write_csv(rows, tmp_path / "f.csv")
    assert factors.main(["--from-csv", str(tmp_path / "f.csv")]) == 0
    assert capsys.readouterr().out.strip() == factors.tables(factors.read_csv(tmp_path / "f.csv"))
