"""studies.controls on tiny MNIST-1D MLP runs: its numbers are those the library computes directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA_DIR

from landscape.artifacts import EvalOptions, checkpoint_data
from landscape.barrier import checkpoint_barrier
from landscape.flatness import normalized_trace
from landscape.hessian_report import HessianOptions, training_batches
from studies import controls as sc
from training.artifacts.checkpoint import build_model, load_checkpoint
from training.imp import main as imp_main
from training.swamp import main as swamp_main

TINY = ["--model", "mlp", "--cycles", "2", "--epochs", "1", "--prune-ratio", "0.5", "--no-progress",
        "--data-dir", str(DATA_DIR)]
SETTINGS = sc.Settings(rewind=1, points=3, hull_samples=4, hull_vertices=2, probes=4, hessian_samples=256,
                       data_dir=str(DATA_DIR))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMP and SWAMP (2 particles), seeds 0 and 1, at rewind points 1 (the grid) and 0."""
    root = tmp_path_factory.mktemp("controls")
    for rewind in (1, 0):
        for seed in (0, 1):
            common = [*TINY, "--seed", str(seed), "--rewind-epochs", str(rewind)]
            assert imp_main([*common, "--out", str(root / f"r{rewind}" / f"imp-s{seed}")]) == 0
            assert swamp_main([*common, "--particles", "2", "--out", str(root / f"r{rewind}" / f"swamp-s{seed}")]) == 0
    return root


@pytest.fixture(scope="module")
def controls(root: Path) -> sc.Controls:
    return sc.measure(root, SETTINGS)


def test_runs_are_found_by_their_config(root):
    runs = sc.find_runs(root)
    assert sorted((r.method, r.rewind, r.seed) for r in runs) == sorted(
        (m, rw, s) for m in ("imp", "swamp") for rw in (0, 1) for s in (0, 1))
    assert {r.cycles for r in runs} == {(0, 1)} and {r.model for r in runs} == {"mlp"}


def test_seed_pair_barriers_are_checkpoint_barrier_raw_and_aligned(root, controls):
    row = next(r for r in controls.rows["seed_pairs"] if (r["method"], r["cycle"]) == ("swamp", 1))
    a, b = (root / "r1" / f"swamp-s{s}" / "cycle_01" / "average.safetensors" for s in row["seeds"])
    direct = checkpoint_barrier(a, b, 3, EvalOptions(("test",), data_dir=str(DATA_DIR), progress=False),
                                allow_mask_union=True, align="weights")
    assert row["loss"] == direct.barrier["test"].loss and row["error"] == direct.barrier["test"].error
    assert row["aligned_loss"] == direct.aligned.barrier["test"].loss
    assert len(controls.rows["seed_pairs"]) == 2 * 2  # one seed pair per method and cycle
    assert controls.unalignable == {}


def test_particle_pairs_cover_every_rewind_point_and_hulls_have_k_vertices(controls):
    pairs = controls.rows["particle_pairs"]
    assert sorted((r["rewind"], r["seed"], r["cycle"]) for r in pairs) == sorted(
        (rw, s, k) for rw in (0, 1) for s in (0, 1) for k in (0, 1))
    assert len(controls.rows["particle_hulls"]) == 2 * 2 and len(controls.rows["seed_hulls"]) == 2 * 2
    assert all(0.0 <= r["frac_below"] <= 1.0 for r in controls.rows["seed_hulls"])


def test_flatness_is_normalized_trace_of_the_solution(root, controls):
    row = next(r for r in controls.rows["flatness"] if (r["method"], r["seed"], r["cycle"]) == ("imp", 1, 1))
    ckpt = load_checkpoint(root / "r1" / "imp-s1" / "cycle_01" / "average.safetensors")
    batches = training_batches(checkpoint_data(ckpt, "cpu", str(DATA_DIR)), HessianOptions(samples=256,
                                                                                          batch_size=512))
    direct = normalized_trace(build_model(ckpt, "cpu"), batches, probes=4, masks=dict(ckpt.masks))
    assert row["raw"] == pytest.approx(direct.raw, rel=1e-9) and row["other"] == pytest.approx(direct.other, rel=1e-9)
    assert row["normalized"] is None and row["layers"] == []  # the MLP has no BatchNorm
    assert "| mlp | all | BN-invariant, per layer | n/a (no layer followed by BatchNorm) |" in \
        sc.flatness_table(controls)


def test_accuracy_table_is_the_paired_difference_of_the_runs_metrics(root, controls):
    def acc(method: str, seed: int) -> float:
        return json.loads((root / "r1" / f"{method}-s{seed}" / "cycle_01" / "metrics.json").read_text())[
            "average"]["test_acc"]

    diffs = [acc("swamp", s) - acc("imp", s) for s in (0, 1)]
    mean = 100 * sum(diffs) / 2
    line = next(x for x in sc.accuracy_table(controls).splitlines() if x.startswith("| mlp | 50.0% |"))
    assert f"| {mean:+.2f} ± " in line
    assert sc.rewind_table(controls).count("| mlp | 0 |") == 2 and sc.rewind_table(controls).count("| mlp | 1 |") == 2


def test_spread_rules():
    assert sc.separation([0.0, 0.01], [1.0, 1.2, 0.9]) == "below"
    assert sc.separation([0.0, 1.0], [0.9, 1.1]) == "overlap"
    assert sc.separation([1.0], []) == "n/a"
    tie = sc.Paired(0, 0.0, 0.01, 0.02, 3, 2, 0.5, 1, 0)
    assert sc.resolved(tie) == "no"
    assert sc.resolved(sc.Paired(0, 0.0, -2.0, 1.0, 3, 0, 0.1, 0, 3)) == "lower"


def test_main_prints_the_tables_and_writes_json(root, tmp_path, capsys):
    out = tmp_path / "controls.json"
    assert sc.main([str(root), "--rewind", "1", "--points", "3", "--hull-samples", "4", "--hull-vertices", "2",
                    "--probes", "4", "--hessian-samples", "256", "--data-dir", str(DATA_DIR), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "### Connectivity: test loss barrier" in text and "### Rewind point" in text
    saved = json.loads(out.read_text())
    assert set(saved["rows"]) == {"accuracy", "particle_pairs", "seed_pairs", "particle_hulls", "seed_hulls",
                                  "flatness"} and saved["settings"]["rewind"] == 1
