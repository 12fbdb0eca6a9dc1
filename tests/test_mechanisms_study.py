"""The open-questions studies (studies.reproductions.mechanisms, flatness, hull): their arithmetic, and the docs'
tables regenerated from the committed per-seed data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from studies.reproductions import connectivity, flatness, hull, mechanisms
from tests.conftest import REPOSITORY


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, generator=g), torch.randint(0, 3, (32,), generator=g)


def _particles(model: nn.Module, n: int, scale: float) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    return [{k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(n)]


def test_the_prediction_is_the_second_order_taylor_polynomial_of_the_exact_hessian():
    model, (x, y) = _net(), _data()
    ps = _particles(model, 3, 0.3)
    got = hull.quadratic_check(model, ps, x, y, samples=5, seed=3)
    names = [k for k, _ in model.named_parameters()]
    shapes = [ps[0][k].shape for k in names]
    flat = [torch.cat([p[k].double().flatten() for k in names]) for p in ps]
    centre = torch.stack(flat).mean(0)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for k, s in zip(names, shapes, strict=True):
            parts[k] = theta[i:i + math.prod(s)].reshape(s).float()
            i += math.prod(s)
        return nn.functional.cross_entropy(torch.func.functional_call(model, parts, (x,)), y).double()

    g = torch.autograd.functional.jacobian(loss, centre)
    h = torch.autograd.functional.hessian(loss, centre)
    alphas = hull._dirichlet(3, 5, 3)
    deltas = [sum(float(a[i]) * (flat[i] - centre) for i in range(3)) for a in alphas]
    predicted = sum(float(g @ d + 0.5 * d @ h @ d) for d in deltas) / 5
    measured = sum(float(loss(centre + d) - loss(centre)) for d in deltas) / 5
    assert got["hull_predicted"] == pytest.approx(predicted, rel=1e-3, abs=1e-7)
    assert got["hull_excess"] == pytest.approx(measured, rel=1e-3, abs=1e-6)
    spread = math.sqrt(sum(float(((f - centre) ** 2).sum()) for f in flat) / 3)
    assert got["spread"] == pytest.approx(spread, rel=1e-5)


def test_the_quadratic_model_becomes_exact_as_the_particles_close_in():
    model, (x, y) = _net(), _data()
    wide, narrow = (hull.quadratic_check(model, _particles(model, 4, s), x, y) for s in (0.5, 0.02))
    assert narrow["unexplained"] < wide["unexplained"]
    assert narrow["unexplained"] < 0.01
    assert narrow["hull_excess"] == pytest.approx(narrow["hull_predicted"], rel=0.05)


def test_the_callers_model_is_untouched_and_its_mode_restored():
    model, (x, y) = _net(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    hull.quadratic_check(model, _particles(model, 2, 0.1), x, y, samples=2)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="particles must hold >= 2 states"):
        hull.quadratic_check(model, _particles(model, 1, 0.1), x, y)


def test_particle_epochs_count_each_arms_training():
    assert [mechanisms.particle_epochs("IMP", c, 16) for c in (0, 5)] == [16, 96]
    assert mechanisms.particle_epochs("SWAMP (N=4)", 5, 16) == 384
    assert mechanisms.particle_epochs("SWAMP on IMP's masks", 5, 16) == 384
    assert mechanisms.particle_epochs("SWA only (N=1)", 5, 16) == 96
    assert mechanisms.particle_epochs("SWAMP from cycle 4", 5, 16) == 16 * (4 + 2 * 4)
    assert mechanisms.particle_epochs("SWAMP from cycle 2", 1, 32) == 64


def test_the_arms_commands_name_the_donors_of_the_transplants(tmp_path):
    plan = mechanisms._plan("cnn1d", 3, tmp_path, False, tmp_path / "data")
    imp_on_swamp, _ = plan["IMP on SWAMP's masks"]
    assert imp_on_swamp[imp_on_swamp.index("--masks-from") + 1] == str(tmp_path / "cnn1d-swamp-s3")
    assert imp_on_swamp[2] == "training.transplant" and "--no-swa" in imp_on_swamp
    swamp_on_imp, _ = plan["SWAMP on IMP's masks"]
    assert swamp_on_imp[swamp_on_imp.index("--masks-from") + 1] == str(tmp_path / "cnn1d-imp-j0-s3")
    plus, _ = plan["SWAMP from cycle 4"]
    assert plus[plus.index("--particles-from-cycle") + 1] == "4"
    # the arms shared with studies.reproductions.ensembles are its very commands, so its runs resume as finished
    from studies.reproductions.ensembles import _runs

    shared = _runs("cnn1d", 3, tmp_path, False, tmp_path / "data")
    assert plan["IMP"] == shared["imp-j0"] and plan["SWAMP (N=4)"] == shared["swamp"]


STUDIES = {"mechanisms": mechanisms, "flatness": flatness, "hull": hull, "connectivity": connectivity}


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_the_docs_print_exactly_the_tables_of_the_committed_data(name):
    """docs/reproductions.md prints what the committed per-seed CSV gives under the one verdict rule."""
    module = STUDIES[name]
    rows = module.read_csv(REPOSITORY / "docs" / "data" / f"{name}-mnist1d.csv")
    seeds = {int(r["seed"]) for r in rows}
    assert len(seeds) >= 6, "every verdict of the docs rests on at least 6 seeds"
    docs = (REPOSITORY / "docs" / "reproductions.md").read_text()
    for table in module.tables(rows).split("\n\n"):
        assert table in docs


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_from_csv_refuses_a_missing_file_in_one_line(name, tmp_path, capsys):
    assert STUDIES[name].main(["--from-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_flatness_verdicts_are_on_the_relative_paired_difference():
    # SWAMP's trace 20% below IMP's on every seed (whatever the scale): "flatter" holds; 2% above: does not hold
    def rows(ratio: float) -> list[dict[str, object]]:
        return [{"model": "cnn1d", "method": m, "seed": s, "cycle": 1, "sparsity": 0.5, "stderr": 0.0,
                 "trace": (10.0 + 5 * s) * (ratio + 0.001 * s if m == "SWAMP (N=4)" else 1.0)}
                for m in flatness.METHODS for s in range(8)]
    section = [part for part in flatness.tables(rows(0.8)).split("\n\n**") if part.startswith("SWAMP finds")][0]
    assert "| cnn1d | 50.0% | -19.6% |" in section and "**holds**" in section
    section = [part for part in flatness.tables(rows(1.02)).split("\n\n**") if part.startswith("SWAMP finds")][0]
    assert "**does not hold**" in section


def test_connectivity_pairs_differ_in_the_factor_they_name(tmp_path):
    a, b = connectivity.endpoints(tmp_path, "cnn1d", "batch order only", 2, 3)
    assert a.parent == b.parent and a.parent.parent.name == "cnn1d-particles-s2"  # one cycle, two particles
    a, b = connectivity.endpoints(tmp_path, "cnn1d", "mask only", 2, 3)
    assert (a.parent.parent.name, b.parent.parent.name) == ("cnn1d-imp-j0-s2", "cnn1d-imp-on-swamp-masks-s2")
    assert a.name == b.name == "average.safetensors" and a.parent.name == b.parent.name == "cycle_03"
