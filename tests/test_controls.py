"""studies.controls on a tiny family of MNIST-1D MLP studies: its numbers are those the library computes directly,
each measurement is cached once (resumable, the same with --jobs 2), and studies.report prints them from the cache."""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DATA_DIR, one_line

from core.artifacts.checkpoint import build_model, load_checkpoint
from core.errors import run_cli
from landscape.flatness import normalized_trace
from landscape.tools.artifacts import EvalOptions, checkpoint_data
from landscape.tools.barrier import checkpoint_barrier
from landscape.tools.hessian_report import HessianOptions, training_batches
from studies import controls as sc
from studies.grid.cli import main as study_main
from studies.report import main as report_main

STUDY = ["--quick", "--preset", "mnist1d-mlp", "--methods", "imp,swamp-n3", "--seeds", "0,1", "--data-dir",
         str(DATA_DIR), "--no-progress"]
SETTINGS = sc.Settings(rewind=1, points=3, hull_samples=4, hull_vertices=2, probes=4, hessian_samples=256,
                       data_dir=str(DATA_DIR))
FLAGS = ["--rewind", "1", "--points", "3", "--hull-samples", "4", "--hull-vertices", "2", "--probes", "4",
         "--hessian-samples", "256"]
PLANNED = 2 * 2 * 2 * 3 + 2 * 2 + 2 * 2 + 2 * 2 + 2 * 2 * 2  # particle pairs, seed pairs, both hulls, flatness


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A family of two studies (``studies.grid --models mlp --rewinds 1,0``), cells mlp-r1 (the grid) and
    mlp-r0: IMP and SWAMP (3 particles), seeds 0 and 1, 2 cycles of 1 epoch, at rewind points 1 and 0."""
    root = tmp_path_factory.mktemp("controls") / "family"
    assert study_main([*STUDY, "--models", "mlp", "--rewinds", "1,0", "--out", str(root)]) == 0
    assert (root / "family.json").is_file()
    return root


@pytest.fixture(scope="module")
def controls(family: Path) -> sc.Controls:
    return sc.measure(family, SETTINGS)


def run_dir(family: Path, method: str, seed: int, rewind: int = 1) -> Path:
    return family / "cells" / f"mlp-r{rewind}" / "runs" / f"{'swamp-n3' if method == 'swamp' else method}-s{seed}"


def cached(family: Path, kind: str) -> list[dict]:
    """The rows of the cache files of one kind, read by hand."""
    return [json.loads(p.read_text())["row"] for p in sorted((family / "analysis" / "controls" / kind).glob("*.json"))]


def fail(*_args):
    raise AssertionError("a cached measurement was computed again")


def test_runs_are_found_by_their_study_roles(family, tmp_path):
    runs = sc.find_runs(family)
    assert sorted((r.method, r.rewind, r.seed) for r in runs) == sorted(
        (m, rw, s) for m in ("imp", "swamp") for rw in (0, 1) for s in (0, 1))
    assert {r.cycles for r in runs} == {(0, 1)} and {r.model for r in runs} == {"mlp"}
    # another SWAMP arm of a study (role swamp-n) is left out, not mixed into the grid
    cell = Path(shutil.copytree(family / "cells" / "mlp-r1", tmp_path / "cell"))
    shutil.copytree(cell / "runs" / "swamp-n3-s0", cell / "runs" / "swamp-n8-s0")
    manifest = json.loads((cell / "study.json").read_text())
    manifest["methods"].append({**manifest["methods"][1], "name": "swamp-n8", "role": "swamp-n"})
    manifest["runs"].append({**manifest["runs"][1], "name": "swamp-n8-s0", "method": "swamp-n8",
                             "path": "runs/swamp-n8-s0"})
    (cell / "study.json").write_text(json.dumps(manifest))
    assert len(sc.find_runs(cell)) == 4
    # outside a study, two SWAMP runs of one seed are refused
    shutil.copytree(cell / "runs" / "swamp-n3-s0", tmp_path / "plain" / "a")
    shutil.copytree(cell / "runs" / "swamp-n8-s0", tmp_path / "plain" / "b")
    assert "are both swamp runs of mlp, seed 0, rewind 1" in one_line(sc.find_runs, tmp_path / "plain")


def test_seed_pair_barriers_are_checkpoint_barrier_raw_and_aligned(family, controls):
    row = next(r for r in controls.rows["seed_pairs"] if (r["method"], r["cycle"]) == ("swamp", 1))
    a, b = (run_dir(family, "swamp", s) / "cycle_01" / "average.safetensors" for s in row["seeds"])
    direct = checkpoint_barrier(a, b, 3, EvalOptions(("test",), data_dir=str(DATA_DIR), progress=False),
                                allow_mask_union=True, align="weights")
    assert row["loss"] == direct.barrier["test"].loss and row["error"] == direct.barrier["test"].error
    assert row["aligned_loss"] == direct.aligned.barrier["test"].loss
    assert len(controls.rows["seed_pairs"]) == 2 * 2  # one seed pair per method and cycle
    assert controls.unalignable == {}


def test_particle_pairs_cover_every_rewind_point_and_hulls_have_k_vertices(controls):
    pairs = controls.rows["particle_pairs"]
    assert sorted((r["rewind"], r["seed"], r["cycle"], tuple(r["pair"])) for r in pairs) == sorted(
        (rw, s, k, p) for rw in (0, 1) for s in (0, 1) for k in (0, 1) for p in ((0, 1), (0, 2), (1, 2)))
    assert len(controls.rows["particle_hulls"]) == 2 * 2 and len(controls.rows["seed_hulls"]) == 2 * 2
    assert all(0.0 <= r["frac_below"] <= 1.0 for r in controls.rows["seed_hulls"])


def test_flatness_is_normalized_trace_of_the_solution(family, controls):
    row = next(r for r in controls.rows["flatness"] if (r["method"], r["seed"], r["cycle"]) == ("imp", 1, 1))
    ckpt = load_checkpoint(run_dir(family, "imp", 1) / "cycle_01" / "average.safetensors")
    batches = training_batches(checkpoint_data(ckpt, "cpu", str(DATA_DIR)), HessianOptions(samples=256,
                                                                                          batch_size=512))
    direct = normalized_trace(build_model(ckpt, "cpu"), batches, probes=4, masks=dict(ckpt.masks))
    assert row["raw"] == pytest.approx(direct.raw, rel=1e-9) and row["other"] == pytest.approx(direct.other, rel=1e-9)
    assert row["normalized"] is None and row["layers"] == []  # the MLP has no BatchNorm
    assert "| mlp | all | BN-invariant, per layer | n/a (no layer followed by BatchNorm) |" in \
        sc.flatness_table(controls)


def test_accuracy_table_is_the_paired_difference_of_the_runs_metrics(family, controls):
    def metrics(method: str, seed: int) -> dict:
        return json.loads((run_dir(family, method, seed) / "cycle_01" / "metrics.json").read_text())

    mean = 100 * statistics.fmean(metrics("swamp", s)["average"]["test_acc"] - metrics("imp", s)["average"]["test_acc"]
                                  for s in (0, 1))
    line = next(x for x in sc.accuracy_table(controls).splitlines()
                if x.startswith(f"| mlp | {100 * metrics('imp', 0)['sparsity']:.1f}% |"))
    assert f"| {mean:+.2f} ± " in line
    assert sc.rewind_table(controls).count("| mlp | 0 |") == 2 and sc.rewind_table(controls).count("| mlp | 1 |") == 2


def test_the_tables_verdict_columns_are_the_one_rule():
    """Six seeds, SWAMP 20% flatter and a point more accurate on every seed, particles 30 points better connected
    and hulls a nat lower than the seeds': every verdict column says holds; below 6 seeds, too few seeds."""
    from tests.test_controls_study import _controls

    controls = _controls()
    row = next(x for x in sc.flatness_table(controls).splitlines() if x.startswith("| mlp | 0.0% | raw trace |"))
    assert row.endswith("| 0/0/6 | holds |")
    assert sc.accuracy_table(controls).splitlines()[-1].endswith("| 6/0/0 | holds |")
    assert sc.connectivity_table(controls, "error").splitlines()[-1].endswith("| holds / holds |")
    assert "| mean hull loss − mean vertex loss |" in next(
        x for x in sc.hull_table(controls).splitlines() if x.endswith("| holds |"))
    few = sc.Controls(controls.settings, {k: [r for r in v if r.get("seed", 0) < 3 and max(r.get("seeds", [0])) < 3]
                                          for k, v in controls.rows.items()}, {})
    assert sc.accuracy_table(few).splitlines()[-1].endswith("| too few seeds |")


def test_every_measurement_is_one_cached_file(family, controls):
    cache = family / "analysis" / "controls"
    assert json.loads((cache / "settings.json").read_text()) == SETTINGS.recorded()
    for kind in sc.KINDS:
        assert sorted(map(json.dumps, cached(family, kind))) == sorted(map(json.dumps, controls.rows[kind]))
    assert sum(len(controls.rows[kind]) for kind in sc.KINDS) == PLANNED
    assert json.loads((cache / "particle_pairs" / "mlp-swamp-r0-s1-c01-p0-2.json").read_text())["row"]["pair"] == [0, 2]


def test_main_reads_the_cache_prints_the_tables_and_writes_json(family, controls, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("studies.controls.cache.measure_row", fail)
    out = tmp_path / "controls.json"
    assert sc.main([str(family), *FLAGS, "--data-dir", str(DATA_DIR), "--json", str(out)]) == 0
    text, err = capsys.readouterr()
    assert text == "\n\n".join(sc.report(controls)) + "\n" and "### Rewind point" in text
    assert f"0 measurements computed now, {PLANNED} read from" in err
    saved = json.loads(out.read_text())
    assert saved["rows"] == controls.rows and saved["settings"]["rewind"] == 1 and saved["unalignable"] == {}
    assert set(saved["seconds"]) == {"particle_pairs", "seed_pairs", "hulls", "flatness"}
    assert {r["measure"] for r in saved["correlations"]} == {"raw"}


def test_an_interrupted_run_continues_with_what_is_missing(family, controls, monkeypatch):
    cache = family / "analysis" / "controls"
    lost = cache / "flatness" / "mlp-imp-r1-s1-c01.json"
    lost.unlink()
    stale = cache / "seed_pairs" / ".mlp-imp-r1-s0-1-c00.json.tmp-99999"  # what a killed writer leaves
    stale.write_text("{")
    computed = []

    def counted(m, settings):
        computed.append((m.kind, m.key))
        return real(m, settings)

    real = sc.measure_row
    monkeypatch.setattr("studies.controls.cache.measure_row", counted)
    again = sc.measure(family, SETTINGS)
    assert computed == [("flatness", "mlp-imp-r1-s1-c01")] and not stale.exists()
    assert again.rows == controls.rows and list(sc.report(again)) == list(sc.report(controls))


def test_two_jobs_give_the_same_rows(family, controls, tmp_path):
    copy = Path(shutil.copytree(family, tmp_path / "family", ignore=shutil.ignore_patterns("analysis")))
    assert sc.measure(copy, SETTINGS, jobs=2).rows == controls.rows


def test_other_settings_are_one_error_line(family, controls, capsys):
    settings = family / "analysis" / "controls" / "settings.json"
    before = settings.read_text()
    assert "records other controls settings (--points 3, not 5)" in one_line(
        sc.measure, family, replace(SETTINGS, points=5))
    assert run_cli(sc.main, [str(family), *FLAGS, "--hull-samples", "8", "--data-dir", str(DATA_DIR)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "(--hull-samples 4, not 8)" in err[0]
    assert settings.read_text() == before


def _mean_std(values: list[float], digits: int = 4, sign: str = "") -> str:
    return f"{statistics.fmean(values):{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def test_report_prints_each_control_beside_its_treatment(family, controls, monkeypatch, capsys):
    monkeypatch.setattr("studies.controls.cache.measure_row", fail)
    assert report_main([str(family)]) == 0
    text = capsys.readouterr().out
    for cell in ("mlp-r0", "mlp-r1"):
        assert f"- {cell}: `python -m studies.report {family / 'cells' / cell}`" in text
    assert "## Controls: each treatment beside its control" in text
    assert "\n\n".join(sc.report(controls)) in text
    # one hull row and one flatness row, recomputed by hand from the cached JSON
    treat = [r["excess_mean"] for r in cached(family, "particle_hulls") if r["cycle"] == 1]
    seeds = {r["method"]: r for r in cached(family, "seed_hulls") if r["cycle"] == 1}
    control = seeds["swamp"]["excess_mean"]
    verdict = "too few seeds"  # two seeds: the one rule decides nothing
    sparsity = f"{100 * seeds['swamp']['sparsity']:.1f}%"
    assert (f"| mlp | {sparsity} | mean hull loss − mean vertex loss | {_mean_std(treat)} | {control:.4f} | "
            f"{seeds['imp']['excess_mean']:.4f} | {verdict} |") in text
    raw = {(r["method"], r["seed"]): r["raw"] for r in cached(family, "flatness") if r["cycle"] == 1}
    imp, swamp = ([raw[m, s] for s in (0, 1)] for m in ("imp", "swamp"))
    diffs = [b - a for a, b in zip(imp, swamp, strict=True)]
    assert (f"| mlp | {sparsity} | raw trace | {_mean_std(imp, 2)} | {_mean_std(swamp, 2)} | "
            f"{_mean_std(diffs, 2, '+')} |") in text


def test_an_incomplete_cache_is_reported_without_computing(family, controls, tmp_path, monkeypatch, capsys):
    copy = Path(shutil.copytree(family, tmp_path / "family"))
    lost = [copy / "analysis" / "controls" / "seed_hulls" / f"mlp-{m}-r1-s0-1-c01.json" for m in ("imp", "swamp")]
    for path in lost:
        path.unlink()
    monkeypatch.setattr("studies.controls.cache.measure_row", fail)
    assert report_main([str(copy)]) == 0
    assert (f"2 of {PLANNED} control measurements are not in {copy / 'analysis' / 'controls'} yet; compute them "
            f"with: python -m studies.controls {copy} {' '.join(FLAGS)}") in capsys.readouterr().out
    assert not any(path.exists() for path in lost)


def test_a_study_report_ends_with_the_controls_of_its_own_cache(family, tmp_path, capsys):
    cell = Path(shutil.copytree(family / "cells" / "mlp-r1", tmp_path / "cell"))
    assert report_main([str(cell)]) == 0
    plain = capsys.readouterr().out
    assert "### Test accuracy (%) of the cycle's solution" in plain and "## Controls" not in plain
    controls = sc.measure(cell, SETTINGS)
    assert report_main([str(cell)]) == 0
    assert capsys.readouterr().out == plain + "\n\n".join(
        ["## Controls: each treatment beside its control",
         f"Cached by `python -m studies.controls {cell} {' '.join(FLAGS)}` (docs/controls.md).",
         *sc.report(controls)]) + "\n\n"


def test_the_grid_rewind_point_is_the_one_every_model_has_or_asked_for():
    """``--rewind`` left out: the only rewind point, or the one every model shares (a rewind sweep of one model
    beside the grid); several or none shared is one line naming --rewind."""
    from core.errors import UserError
    from studies.controls.cli import grid_rewind
    from studies.controls.runs import Run

    def runs(*pairs):
        return [Run(Path(f"{m}-{r}"), m, "imp", 0, r, 1, (0,)) for m, r in pairs]

    assert grid_rewind(runs(("mlp", 1))) == 1
    assert grid_rewind(runs(("cnn1d", 0), ("cnn1d", 2), ("cnn1d", 8), ("mlp", 2), ("transformer1d", 2))) == 2
    with pytest.raises(UserError, match=r"rewind points 0, 2; choose the grid's with --rewind N"):
        grid_rewind(runs(("cnn1d", 0), ("cnn1d", 2)))
    with pytest.raises(UserError, match="none of them shared by every model"):
        grid_rewind(runs(("cnn1d", 0), ("mlp", 2)))
