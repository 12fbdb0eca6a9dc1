"""landscape.tools.barrier: linear mode connectivity between checkpoints (uses conftest's ``tiny_run``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.artifacts.checkpoint import build_model, load_checkpoint, save_checkpoint
from core.averaging import recalibrate_batchnorm
from core.data import mnist1d_spec
from core.errors import UserError, run_cli
from core.evaluate import evaluate
from core.models import build_model as fresh_model
from core.models import model_spec
from core.pruning import dense_masks
from landscape.connectivity import frankle_barrier, max_barrier
from landscape.tools.artifacts import EvalOptions, bn_subsample, cached_dataset, even_batch_size
from landscape.tools.barrier import (
    checkpoint_barrier,
    consecutive_barriers,
    cycle_barriers,
    format_result,
    main,
    plot_barrier,
    plot_barrier_set,
)
from training.swamp import main as swamp_main

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TEST = EvalOptions(("test",), progress=False)
CONTRACT_KEYS = {"a", "b", "lambdas", "test", "train", "barrier", "barrier_max", "bn"}
EXTRA_KEYS = {"points", "mask", "device", "endpoints"}  # documented in landscape/tools/barrier.py


def particle(run: Path, cycle: int, p: int) -> Path:
    return run / f"cycle_{cycle:02d}" / f"particle_{p:02d}.safetensors"


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One particle trained like tiny_run's cycle 0, from an independent initialisation (seed 1)."""
    out = tmp_path_factory.mktemp("runs") / "seed1"
    assert swamp_main(["--cycles", "1", "--epochs", "2", "--particles", "1", "--rewind-epochs", "1", "--seed", "1",
                       "--no-progress", "--data-dir", str(DATA_DIR), "--out", str(out)]) == 0
    return particle(out, 0, 0)


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MLP (no BatchNorm) on the same MNIST-1D data as tiny_run."""
    torch.manual_seed(0)
    spec = model_spec("mlp", 10)
    model = fresh_model(spec)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(path, model.state_dict(), dense_masks(model), kind="particle", model=spec,
                    dataset=mnist1d_spec(str(DATA_DIR)), config={}, cycle=0, particle=0)
    return path


def test_barrier_definitions_on_known_curves():
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert frankle_barrier(lambdas, [1.0, 2.0, 3.0, 2.0, 1.0]) == pytest.approx(2.0)
    assert frankle_barrier(lambdas, [0.0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(0.0)
    assert frankle_barrier(lambdas, [1.0, 1.5, 2.5, 3.0, 3.0]) == pytest.approx(0.5)
    assert max_barrier([1.0, 1.5, 2.5, 3.0, 3.0]) == 0.0
    assert max_barrier([1.0, 4.0, 2.0]) == 2.0


def test_identical_checkpoints_have_zero_barrier_and_flat_curve(tiny_run):
    a = particle(tiny_run, 1, 0)
    result = checkpoint_barrier(a, a, points=5, options=TEST)
    assert len(set(result.curves["test"].loss)) == 1 and len(set(result.curves["test"].acc)) == 1
    assert result.barrier["test"].loss == 0.0 and result.barrier["test"].error == 0.0
    assert result.barrier_max["test"].loss == 0.0 and result.barrier_max["test"].error == 0.0
    assert result.mask.shared


def test_swapping_endpoints_reverses_curve(tiny_run):
    a, b = particle(tiny_run, 1, 0), particle(tiny_run, 1, 1)
    ab, ba = checkpoint_barrier(a, b, 5, TEST), checkpoint_barrier(b, a, 5, TEST)
    assert ab.lambdas == (0.0, 0.25, 0.5, 0.75, 1.0)
    np.testing.assert_allclose(ab.curves["test"].loss, ba.curves["test"].loss[::-1], rtol=1e-5)
    np.testing.assert_allclose(ab.curves["test"].acc, ba.curves["test"].acc[::-1], atol=2e-3)
    assert ab.barrier["test"].loss == pytest.approx(ba.barrier["test"].loss, abs=1e-5)
    assert ab.barrier_max["test"].loss == pytest.approx(ba.barrier_max["test"].loss, abs=1e-5)


def test_endpoints_equal_the_checkpoints_on_their_own(tiny_run):
    a, b = particle(tiny_run, 1, 0), particle(tiny_run, 1, 2)
    stored = checkpoint_barrier(a, b, 3, EvalOptions(("test",), bn_recal=0))
    recal = checkpoint_barrier(a, b, 3, EvalOptions(("test",), bn_recal=512, seed=3))
    assert "stored" in stored.bn and recal.bn == "recalibrated on 512 train samples"
    data = cached_dataset(load_checkpoint(a).dataset, "cpu")
    for n, path in ((0, a), (-1, b)):
        model = build_model(load_checkpoint(path))
        own = evaluate(model, data.eval_batches("test", 1000))
        assert (stored.curves["test"].loss[n], stored.curves["test"].acc[n]) == (own.loss, own.acc)
        recalibrate_batchnorm(model, data.eval_batches("train", even_batch_size(512, 1000),
                                                       bn_subsample(data.size("train"), 512, 3)))
        own = evaluate(model, data.eval_batches("test", 1000))
        assert (recal.curves["test"].loss[n], recal.curves["test"].acc[n]) == (own.loss, own.acc)


def test_independent_networks_have_a_barrier_particles_of_one_ticket_hardly(tiny_run, other_seed):
    one_ticket = checkpoint_barrier(particle(tiny_run, 0, 0), particle(tiny_run, 0, 1), 5, TEST).barrier["test"]
    independent = checkpoint_barrier(particle(tiny_run, 0, 0), other_seed, 5, TEST).barrier["test"]
    assert independent.loss > 0.3 and independent.error > 0.1
    assert independent.loss > 10 * one_ticket.loss and independent.error > 10 * one_ticket.error


def test_cli_writes_contract_json_and_plot(tiny_run, tmp_path, capsys):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    args = [str(particle(tiny_run, 1, 0)), str(particle(tiny_run, 1, 1)), "--points", "3", "--bn-recal", "256",
            "--json", str(out), "--plot", str(png), "--no-progress"]
    assert run_cli(main, args) == 0
    printed = capsys.readouterr().out
    assert "barrier (Frankle et al. 2020)" in printed and "recalibrated on 256 train samples" in printed
    result = json.loads(out.read_text())
    assert set(result) == CONTRACT_KEYS | EXTRA_KEYS
    assert result["lambdas"] == [0.0, 0.5, 1.0]
    for split in ("train", "test"):
        assert set(result[split]) == {"loss", "acc"} and len(result[split]["loss"]) == 3
        assert set(result["barrier"][split]) == set(result["barrier_max"][split]) == {"loss", "error"}
    assert png.read_bytes().startswith(b"\x89PNG")


def test_different_masks_need_allow_mask_union_then_are_interpolated_and_reported(tiny_run, capsys):
    a, b = particle(tiny_run, 0, 0), particle(tiny_run, 1, 0)
    with pytest.raises(UserError, match="different masks .*--allow-mask-union"):
        checkpoint_barrier(a, b, 3, TEST)
    assert run_cli(main, [str(a), str(b), "--points", "2", "--split", "test"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    result = checkpoint_barrier(a, b, 3, TEST, allow_mask_union=True)
    assert not result.mask.shared
    assert result.mask.density == pytest.approx(1.0) and result.mask.densities[1] == pytest.approx(0.8, abs=1e-3)
    assert "union density" in result.mask.describe()


def test_model_without_batchnorm_says_so(mlp_checkpoint):
    result = checkpoint_barrier(mlp_checkpoint, mlp_checkpoint, 2, TEST)
    assert result.bn.startswith("no BatchNorm")


def test_run_modes(tiny_run, tmp_path):
    pairs = cycle_barriers(str(tiny_run), 1, 3, TEST)
    assert [(i, j) for i, j, _ in pairs.pairs] == [(0, 1), (0, 2), (1, 2)]
    matrix = pairs.matrix("test")
    assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0.0)
    steps = consecutive_barriers(str(tiny_run), 3, TEST)
    assert [(i, j) for i, j, _ in steps.pairs] == [(0, 1), (1, 2)]
    assert all(not r.mask.shared for _, _, r in steps.pairs)
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    assert run_cli(main, ["--run", str(tiny_run), "--consecutive", "--points", "2", "--split", "test",
                          "--json", str(out), "--plot", str(png)]) == 0
    saved = json.loads(out.read_text())
    assert saved["mode"] == "consecutive" and len(saved["pairs"]) == 2
    assert set(saved["pairs"][0]) == CONTRACT_KEYS - {"train"} | EXTRA_KEYS | {"i", "j"}
    assert png.read_bytes().startswith(b"\x89PNG")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_inputs_exit_2_with_one_line(tiny_run, mlp_checkpoint, tmp_path, capsys):
    a = particle(tiny_run, 1, 0)
    ckpt = load_checkpoint(a)
    other_data = tmp_path / "other_data.safetensors"
    save_checkpoint(other_data, ckpt.state, ckpt.masks, kind="particle", model=ckpt.model,
                    dataset={**ckpt.dataset, "num_samples": 1234}, config={})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    cases = [([str(a), str(mlp_checkpoint)], "different architectures"),
             ([str(a), str(other_data)], "different data sets"),
             ([str(a), str(garbage)], "not a readable safetensors"),
             ([str(a), str(tmp_path / "missing.safetensors")], "does not exist"),
             ([str(a)], "two checkpoints"),
             (["--run", str(tiny_run)], "--cycle K or --consecutive"),
             ([str(a), str(a), "--points", "1"], "--points"),
             ([str(a), str(a), "--bn-recal", "-1"], "--bn-recal")]
    for argv, message in cases:
        assert run_cli(main, [*argv, "--no-progress"]) == 2, argv
        assert message in _one_error_line(capsys)


def test_figures_name_their_checkpoints_units_and_definitions(tiny_run):
    a, b = particle(tiny_run, 1, 0), particle(tiny_run, 1, 1)
    result = checkpoint_barrier(a, b, points=3, options=TEST)
    fig = plot_barrier(result)
    title = fig.get_suptitle().replace("\u00a0", " ")  # names are joined by no-break spaces
    assert f"A = {tiny_run.name}/cycle_01/particle_00" in title and f"B = {tiny_run.name}/cycle_01/particle_01" in title
    assert "λ = 0" in title and "λ = 1" in title
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["loss (cross-entropy)", "error (%)"]
    caption = fig.get_supxlabel()
    assert result.bn in caption and "barrier_max" in caption and "shared mask" in caption
    assert "barrier_max: max over lambda" in format_result(result)
    pairs = plot_barrier_set(cycle_barriers(str(tiny_run), 1, 2, TEST))
    heatmaps = [ax for ax in pairs.axes if ax.get_xlabel()]
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in heatmaps} == {("particle j", "particle i")}
    assert all(ax.collections[0].get_clim()[0] == 0.0 for ax in heatmaps)  # barriers are >= 0
    steps = plot_barrier_set(consecutive_barriers(str(tiny_run), 2, TEST))
    assert tiny_run.name in steps.get_suptitle() and all(ax.get_ylim()[0] == 0.0 for ax in steps.axes)
