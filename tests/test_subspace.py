"""landscape.tools.subspace and landscape.tools.plane: convex hull of particles and loss planes (uses ``tiny_run``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UserError, run_cli
from landscape.combination import Combination
from landscape.connectivity import plane_geometry, simplex_samples
from landscape.tools.artifacts import CheckpointSet, EvalOptions, load_compatible
from landscape.tools.barrier import checkpoint_barrier
from landscape.tools.plane import checkpoint_plane
from landscape.tools.subspace import hull_landscape, main, plot_plane

TEST = EvalOptions(("test",), bn_recal=512, progress=False)
CONTRACT_KEYS = {"checkpoints", "vertices", "centroid", "hull", "summary"}
EXTRA_KEYS = {"samples", "seed", "bn", "mask", "device"}  # documented in landscape/tools/subspace.py


def particles(run: Path, cycle: int = 1) -> list[Path]:
    return sorted((run / f"cycle_{cycle:02d}").glob("particle_*.safetensors"))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), samples=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_simplex_samples_are_nonnegative_and_sum_to_one(n, samples, seed):
    rows = simplex_samples(n, samples, seed)
    assert rows.shape == (samples, n) and np.all(rows >= 0)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(rows, simplex_samples(n, samples, seed))


def test_hull_of_identical_checkpoints_is_constant(tiny_run):
    p = particles(tiny_run)[0]
    result = hull_landscape([p, p, p], samples=4, options=TEST)
    values = {*result.vertices["test"].loss, result.centroid["test"].loss, *result.hull["test"].loss}
    assert len(values) == 1
    summary = result.summary["test"]
    assert summary.hull_loss_max == summary.vertex_loss_max and summary.hull_frac_below_vertex_max == 1.0


def test_vertices_equal_barrier_endpoints(tiny_run):
    a, b, c = particles(tiny_run)
    hull = hull_landscape([a, b, c], samples=3, options=TEST)
    line = checkpoint_barrier(a, b, 2, TEST)
    assert hull.vertices["test"].loss[:2] == (line.curves["test"].loss[0], line.curves["test"].loss[-1])
    assert hull.vertices["test"].acc[:2] == (line.curves["test"].acc[0], line.curves["test"].acc[-1])
    coefficients = np.array(hull.coefficients)
    assert np.all(coefficients >= 0) and np.allclose(coefficients.sum(axis=1), 1.0)
    assert min(hull.vertices["test"].loss) > 0


def test_plane_coordinates_map_back_to_the_checkpoints(tiny_run):
    ckpts = load_compatible(particles(tiny_run))
    inputs = CheckpointSet(ckpts, TEST)
    geometry = plane_geometry(inputs.combination.displacement_gram())
    for i, (x, y) in enumerate(geometry.vertices):
        one_hot = tuple(float(k == i) for k in range(3))
        assert geometry.coefficients(x, y) == one_hot
        own = CheckpointSet([ckpts[i]], TEST).scan([[1.0]], "own")["test"]
        assert inputs.scan([geometry.coefficients(x, y)], "vertex")["test"] == own
    # distances in the plane are the parameter distances between the checkpoints
    (x2, _), (x3, y3) = geometry.vertices[1], geometry.vertices[2]
    gram = inputs.combination.displacement_gram()
    assert x2 == pytest.approx(np.sqrt(gram[0, 0])) and x3**2 + y3**2 == pytest.approx(gram[1, 1])


def test_plane_scan_resumes_from_its_partial_file(tiny_run, tmp_path, monkeypatch):
    ckpts = particles(tiny_run)
    full = checkpoint_plane(ckpts, resolution=4, margin=0.1, options=TEST)
    assert full.grids["test"]["loss"].shape == (4, 4) and full.resumed == 0
    partial = tmp_path / "plane.json.partial"
    real_load, calls = Combination.load, []

    def interrupted(self, coefficients, bn=None):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(1)
        return real_load(self, coefficients, bn)

    monkeypatch.setattr(Combination, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_plane(ckpts, resolution=4, margin=0.1, options=TEST, partial=partial)
    assert len(json.loads(partial.read_text())["points"]) == 7
    monkeypatch.setattr(Combination, "load", real_load)
    resumed = checkpoint_plane(ckpts, resolution=4, margin=0.1, options=TEST, partial=partial)
    assert resumed.resumed == 7 and not partial.exists()
    np.testing.assert_array_equal(resumed.grids["test"]["loss"], full.grids["test"]["loss"])
    other = checkpoint_plane(ckpts, resolution=3, margin=0.1, options=TEST, partial=partial)
    assert other.resumed == 0  # a partial file of other settings is not reused


def test_negative_batchnorm_variances_outside_the_hull_are_named_and_nothing_is_written(tiny_run, tmp_path, capsys):
    """Regression (found by test_flag_fuzz): with --bn-recal 0 the stored running variances are combined like the
    weights, and at a plane point outside the hull one turned negative; the NaN loss was blamed on "the models'
    weights" and the refused command left its .partial file behind."""
    out = tmp_path / "r.json"
    argv = [*map(str, particles(tiny_run)), "--samples", "4", "--resolution", "3", "--plane", "--bn-recal", "0",
            "--json", str(out), "--no-progress"]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the BatchNorm running variance ") and err.count("\n") == 1, err
    assert "is negative" in err and "--bn-recal N" in err
    assert not any(tmp_path.iterdir()), "a refused command writes nothing (no r.json.partial)"
    assert run_cli(main, [*argv[:-5], "--bn-recal", "256", *argv[-3:]]) == 0, "recomputed BatchNorm: a plane"
    ckpts = load_compatible(particles(tiny_run))
    inside = CheckpointSet(ckpts, EvalOptions(("test",), bn_recal=0, progress=False)).combination
    inside.load([0.2, 0.3, 0.5])  # inside the hull the combined variances stay valid


def test_collinear_checkpoints_have_no_plane(tiny_run):
    a, b, _ = particles(tiny_run)
    with pytest.raises(ValueError, match="collinear"):
        checkpoint_plane([a, a, b], resolution=2, options=TEST)


def test_different_masks_need_allow_mask_union(tiny_run):
    mixed = [particles(tiny_run, 0)[0], particles(tiny_run, 1)[0]]
    with pytest.raises(UserError, match="--allow-mask-union"):
        hull_landscape(mixed, samples=2, options=TEST)
    result = hull_landscape(mixed, samples=2, options=TEST, allow_mask_union=True)
    assert not result.mask.shared and result.mask.density == pytest.approx(1.0)


def test_cli_hull_and_plane(tiny_run, tmp_path, capsys):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert run_cli(main, ["--run", str(tiny_run), "--cycle", "1", "--samples", "5", "--plane", "--resolution", "3",
                          "--bn-recal", "256", "--json", str(out), "--plot", str(png), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "centroid" in printed and "plane test: 3x3 grid" in printed
    result = json.loads(out.read_text())
    assert set(result) == CONTRACT_KEYS | EXTRA_KEYS | {"plane"}
    assert len(result["hull"]["coefficients"]) == 5 and len(result["hull"]["test"]["loss"]) == 5
    assert len(result["vertices"]["test"]["loss"]) == 3 and set(result["centroid"]["test"]) == {"loss", "acc"}
    assert {"hull_loss_max", "hull_loss_mean", "vertex_loss_max"} <= set(result["summary"]["test"])
    assert np.array(result["plane"]["test"]["loss"]).shape == (3, 3)
    assert png.read_bytes().startswith(b"\x89PNG") and not Path(f"{out}.partial").exists()
    hull_png = tmp_path / "hull.png"
    assert run_cli(main, [*map(str, particles(tiny_run)[:2]), "--samples", "3", "--plot", str(hull_png)]) == 0
    assert hull_png.read_bytes().startswith(b"\x89PNG")


def test_cli_refusals_exit_2_with_one_line(tiny_run, capsys):
    ps = particles(tiny_run)
    cases = [([str(ps[0]), str(particles(tiny_run, 0)[0])], "--allow-mask-union"),
             ([*map(str, ps[:2]), "--plane"], "exactly three"),
             (["--run", str(tiny_run)], "--cycle"),
             ([str(ps[0])], "at least two")]
    for argv, message in cases:
        assert run_cli(main, [*argv, "--samples", "2", "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err


def test_plane_figure_names_the_checkpoints_and_its_axes(tiny_run):
    paths = particles(tiny_run)
    fig = plot_plane(checkpoint_plane(paths, resolution=3, options=TEST))
    for i, path in enumerate(paths):
        assert f"C{i + 1}\u00a0=\u00a0{tiny_run.name}/cycle_01/{path.stem}" in fig.get_suptitle()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert all("L2 distance" in ax.get_xlabel() and "L2 distance" in ax.get_ylabel() for ax in panels)
    assert panels[0].collections[0].get_cmap().name == "viridis"  # low loss dark, high loss bright
    assert "Gram-Schmidt" in fig.get_supxlabel()
