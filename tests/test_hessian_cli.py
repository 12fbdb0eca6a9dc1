"""``python -m landscape.hessian`` on real (tiny) run checkpoints: contract JSON, run tables, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from landscape.tools.hessian import main
from landscape.tools.hessian_output import report_figure
from landscape.tools.hessian_report import HessianOptions, analyse_checkpoint

CONTRACT_KEYS = {"checkpoint", "method", "probes", "samples", "subspace", "trace", "stderr", "per_layer"}
FAST = ["--samples", "256", "--batch-size", "128", "--no-progress", "--device", "cpu"]


def test_checkpoint_json_has_contract_keys(tiny_run: Path, tmp_path: Path, capsys):
    ckpt = tiny_run / "cycle_01" / "average.safetensors"
    out, plot = tmp_path / "h.json", tmp_path / "h.png"
    assert main([str(ckpt), "--probes", "6", "--per-layer", "--top-eigen", "--density", "--lanczos-steps", "6",
                 "--json", str(out), "--plot", str(plot), *FAST]) == 0
    obj = json.loads(out.read_text())
    assert CONTRACT_KEYS <= set(obj)
    assert obj["checkpoint"] == str(ckpt) and obj["method"] == "hutchpp" and obj["probes"] == 6
    assert obj["samples"] == 256 and obj["subspace"] == "mask" and obj["mode"].startswith("eval")
    assert obj["per_layer"] and sum(obj["per_layer"].values()) == pytest.approx(obj["trace"])
    assert obj["top_eigenvalue"]["value"] > 0 and len(obj["density_estimate"]["grid"]) == 1000
    assert plot.stat().st_size > 0
    assert "model in eval mode" in capsys.readouterr().out


def test_top_eigen_stops_at_eigen_tol_and_reports_its_true_residual(tiny_run: Path, tmp_path: Path, capsys):
    ckpt, out = tiny_run / "cycle_01" / "average.safetensors", tmp_path / "e.json"
    assert main([str(ckpt), "--probes", "2", "--top-eigen", "--eigen-tol", "0.01", "--json", str(out), *FAST]) == 0
    top = json.loads(out.read_text())["top_eigenvalue"]
    assert top["converged"] and top["tol"] == 0.01 and top["steps"] < 64 and top["matvecs"] >= top["steps"] + 1
    assert 0 < top["residual"] <= 0.01 * top["value"]
    assert "converged): " in capsys.readouterr().out
    assert main([str(ckpt), "--probes", "2", "--top-eigen", "--eigen-tol", "0", "--lanczos-steps", "3",
                 "--json", str(out), *FAST]) == 0
    top = json.loads(out.read_text())["top_eigenvalue"]
    assert not top["converged"] and top["steps"] == 3 and top["matvecs"] == 4
    assert "not converged to 0" in capsys.readouterr().out


def test_target_rse_stops_the_default_method_early(tiny_run: Path, tmp_path: Path):
    ckpt, out = tiny_run / "cycle_01" / "average.safetensors", tmp_path / "t.json"
    assert main([str(ckpt), "--probes", "2000", "--target-rse", "0.05", "--json", str(out), *FAST]) == 0
    obj = json.loads(out.read_text())
    assert obj["method"] == "hutchpp" and obj["target_rse"] == 0.05 and obj["probes_requested"] == 2000
    assert obj["probes"] < 2000 and obj["relative_stderr"] <= 0.05
    assert len(obj["terms"]) < obj["probes"]  # sketch and pilot products are not residual terms


@pytest.mark.parametrize(("target", "chosen"), [("0.5", "hutchinson"), ("0.01", "hutchpp")])
def test_method_auto_picks_the_estimator_for_the_target(tiny_run: Path, tmp_path: Path, target, chosen, capsys):
    ckpt, out = tiny_run / "cycle_01" / "average.safetensors", tmp_path / "a.json"
    assert main([str(ckpt), "--method", "auto", "--probes", "500", "--target-rse", target, "--per-layer",
                 "--json", str(out), *FAST]) == 0
    assert f"trace ({chosen}, chosen by --method auto, " in capsys.readouterr().out
    obj = json.loads(out.read_text())
    assert obj["method_requested"] == "auto" and obj["method"] == chosen
    assert obj["relative_stderr"] <= float(target) and obj["probes"] < 500
    low, high = obj["interval"]
    assert low < obj["trace"] < high and set(obj["per_layer_interval"]) == set(obj["per_layer"])


def test_full_subspace_covers_pruned_coordinates(tiny_run: Path, tmp_path: Path):
    ckpt = tiny_run / "cycle_02" / "average.safetensors"
    dims = {}
    for subspace in ("mask", "full"):
        out = tmp_path / f"{subspace}.json"
        assert main([str(ckpt), "--probes", "3", "--method", "hutchpp", "--subspace", subspace, "--json", str(out),
                     *FAST]) == 0
        obj = json.loads(out.read_text())
        assert obj["subspace"] == subspace and obj["method"] == "hutchpp"
        dims[subspace] = obj["dim"]
    assert dims["mask"] < dims["full"]


def test_run_table_json_and_plot(tiny_run: Path, tmp_path: Path, capsys):
    out, plot = tmp_path / "run.json", tmp_path / "run.png"
    assert main(["--run", str(tiny_run), "--probes", "2", "--json", str(out), "--plot", str(plot), *FAST]) == 0
    obj = json.loads(out.read_text())
    rows = obj["rows"]
    assert [r["cycle"] for r in rows] == [0, 1, 2] and all(r["kind"] == "average" for r in rows)
    assert all(CONTRACT_KEYS <= set(r) for r in rows)
    assert [r["sparsity"] for r in rows] == sorted(r["sparsity"] for r in rows)
    assert plot.stat().st_size > 0
    assert len(capsys.readouterr().out.splitlines()) == 4


@pytest.mark.parametrize("args", [
    ["missing.safetensors"],
    ["{run}/config.json"],
    ["{ckpt}", "--probes", "0"],
    ["{ckpt}", "--method", "hutchpp", "--probes", "0"],
    ["{ckpt}", "--method", "newton"],
    ["{ckpt}", "--samples", "many"],
    ["{ckpt}", "--batch-size", "0"],
    ["{ckpt}", "--target-rse", "-1"],
    ["{ckpt}", "--run", "{run}"],
    ["--particles"],
    ["--run", "{run}/cycle_00"],
    [],
])
def test_bad_input_is_one_line_and_exit_2(tiny_run: Path, capsys, args):
    ckpt = tiny_run / "cycle_00" / "average.safetensors"
    argv = [a.format(run=tiny_run, ckpt=ckpt) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_module_entry_point(tmp_path: Path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    proc = subprocess.run([sys.executable, "-m", "landscape.hessian", str(corrupt)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "corrupt.safetensors" in proc.stderr


def test_figure_names_the_checkpoint_and_its_band(tiny_run: Path):
    options = HessianOptions(probes=3, samples=128, batch_size=128, top_eigen=True, density=True, lanczos_steps=4,
                             progress=False)
    fig = report_figure(analyse_checkpoint(tiny_run / "cycle_01" / "average.safetensors", options))
    assert f"{tiny_run.name}/cycle_01/average (average, cycle 1, density" in fig.get_suptitle()
    trace = fig.axes[0]
    assert any("standard error" in text.get_text() for text in trace.get_legend().get_texts())
    assert all(float(tick).is_integer() for tick in trace.get_xticks())
